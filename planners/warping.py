"""A monotone power warp of an objective before the GP sees it (Yeo-Johnson, as Ax's PowerTransformY).

Real property tables are skewed: a few failed or exotic samples sit many standard deviations from
the bulk (e.g. grain-boundary energies of 0.96-1.2 J/m^2 with outliers up to 3). Standardized, such
outliers squash the informative bulk into a sliver and the GP either explains everything as noise
or fits a very short lengthscale. A Yeo-Johnson transform, with its exponent fitted by maximum
likelihood to make the observed values look Gaussian, pulls the tails in. It is strictly increasing,
so the best point, the Pareto set and every `>=`/`<=` bound keep their meaning in warped units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Exponents outside this range only arise from a handful of points and make the warp numerically wild.
LAMBDA_RANGE = (-2.0, 4.0)
MIN_POINTS = 4  # below this a fitted exponent is noise


@dataclass(frozen=True)
class PowerWarp:
    """x -> yeo_johnson((x - center) / scale, lmbda): centered and scaled first so the fit is unit-free."""

    center: float
    scale: float
    lmbda: float

    def __call__(self, x: float) -> float:
        z = (x - self.center) / self.scale
        lam = self.lmbda
        if z >= 0:
            return math.log1p(z) if abs(lam) < 1e-12 else ((1 + z) ** lam - 1) / lam
        return -math.log1p(-z) if abs(lam - 2) < 1e-12 else -((1 - z) ** (2 - lam) - 1) / (2 - lam)

    @classmethod
    def fit(cls, values: Sequence[float]) -> PowerWarp | None:
        """The maximum-likelihood warp of `values`; None when they are too few or all equal."""
        x = np.asarray(values, dtype=float)
        if x.size < MIN_POINTS or float(np.std(x)) == 0.0:
            return None
        center, scale = float(np.mean(x)), float(np.std(x))
        lmbda = float(stats.yeojohnson_normmax((x - center) / scale))
        return cls(center, scale, min(max(lmbda, LAMBDA_RANGE[0]), LAMBDA_RANGE[1]))
