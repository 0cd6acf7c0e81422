"""A random-forest surrogate for candidate pools: the mean and spread of the trees, scored by log-EI.

Where a GP is the wrong model, on tables of many descriptor columns of which few matter, with jumps
and interactions a stationary kernel cannot follow, published active learning over materials and
molecules uses random forests (Ling et al. 2017, Integr. Mater. Manuf. Innov. 6:207; Liang et al.
2021, npj Comput. Mater. 7:188): a forest picks its splits among the columns that predict and
ignores the rest, and costs milliseconds at any width. The spread of the trees' predictions stands in
for the posterior standard deviation in expected improvement.

Only a pool can be searched: a forest is piecewise constant, there is no gradient to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import erfcx, log_ndtr
from sklearn.ensemble import RandomForestRegressor  # type: ignore[import-untyped]  # no py.typed

from closedloop.planners.sampling import derive_seed

N_TREES = 100  # enough for a stable mean and spread at ~0.3 s per fit on 250 x 300 (200: twice the time)
# A third of the columns per split is Breiman's choice for regression: enough chances to find an
# informative column among many uninformative ones, and trees that still differ (a useful spread).
MAX_FEATURES = 1 / 3
MIN_SAMPLES_LEAF = 1
# The trees of a forest can agree exactly (e.g. far from all data); a spread floor keeps EI defined there.
MIN_SPREAD = 1e-9
ACQUISITION = "LogExpectedImprovement(random forest)"


@dataclass(frozen=True)
class ForestScores:
    """Per candidate: log-EI over the best observed value, and the forest's mean and spread behind it."""

    log_ei: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    best_f: float
    settings: dict[str, Any]


def forest_scores(X: np.ndarray, y: np.ndarray, candidates: np.ndarray, seed: int) -> ForestScores:
    """Fit a forest to (X, y), y larger-is-better, and score `candidates` by log-EI over max(y).

    Deterministic for a given `seed` (one thread, a seeded bootstrap and column sampling).
    """
    if X.shape[0] < 2:
        raise ValueError(f"a random forest needs at least 2 observations, got {X.shape[0]}")
    forest = RandomForestRegressor(
        n_estimators=N_TREES,
        max_features=MAX_FEATURES,
        min_samples_leaf=MIN_SAMPLES_LEAF,
        random_state=derive_seed(seed, "forest") % 2**32,
        n_jobs=1,
    )
    forest.fit(X, y)
    per_tree = np.stack([tree.predict(candidates) for tree in forest.estimators_])
    mean = per_tree.mean(axis=0)
    spread = np.maximum(per_tree.std(axis=0), MIN_SPREAD)
    best_f = float(np.max(y))
    settings = {
        "surrogate": "random forest",
        "n_trees": N_TREES,
        "max_features": round(MAX_FEATURES, 4),
        "min_samples_leaf": MIN_SAMPLES_LEAF,
        "uncertainty": "standard deviation of the trees' predictions",
        "best_f": best_f,
        "incumbent": "best observed value (model units)",
    }
    return ForestScores(log_expected_improvement(mean, spread, best_f), mean, spread, best_f, settings)


def log_expected_improvement(mean: np.ndarray, sigma: np.ndarray, best_f: float) -> np.ndarray:
    """log E[max(Y - best_f, 0)] for Y ~ N(mean, sigma^2), accurate far below the incumbent too.

    EI = sigma * h(u), u = (mean - best_f) / sigma, h(u) = phi(u) + u Phi(u). For u < 0 it is written
    phi(u) (1 - |u| R(|u|)) with Mills' ratio R(t) = sqrt(pi/2) erfcx(t / sqrt 2), so the log never takes
    the difference of two numbers that underflow (as BoTorch's LogEI does it, in numpy).
    """
    u = (mean - best_f) / sigma
    log_phi = -0.5 * u * u - 0.5 * math.log(2 * math.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = np.log(np.exp(log_phi) + u * np.exp(log_ndtr(u)))
        t = np.abs(u)
        tail = 1.0 - t * math.sqrt(math.pi / 2) * erfcx(t / math.sqrt(2))
        # 1 - t R(t) -> 1 / t^2 as t grows; past where it loses precision, its asymptote.
        tail = np.where(t > 1e3, 1.0 / (t * t), np.maximum(tail, 1e-300))
        lower = log_phi + np.log(tail)
    return np.log(sigma) + np.where(u >= -1.0, upper, lower)


def top_rows(scores: np.ndarray, n: int) -> list[int]:
    """The `n` highest-scoring positions, best first; ties by position (so the order is reproducible)."""
    order = np.lexsort((np.arange(scores.size), -scores))
    return order[: min(n, scores.size)].tolist()
