"""Maximising an acquisition function over the space: continuous, mixed, or a finite set of points."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.models.model import Model
from botorch.optim import optimize_acqf, optimize_acqf_discrete, optimize_acqf_mixed
from torch import Tensor

from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.polytope import PolytopeSampler, polytope_generator


@dataclass(frozen=True)
class OptimizerSettings:
    """Multi-start settings; the defaults keep one q=1 proposal well under a second on two cores."""

    num_restarts: int = 6
    raw_samples: int = 192
    maxiter: int = 200
    # Up to this many choice combinations, each is optimized separately (exact); beyond, one-hot
    # columns are relaxed to [0, 1] and rounded afterwards.
    max_choice_combinations: int = 8

    def as_provenance(self, encoding: SpaceEncoding | None) -> dict[str, int | str]:
        """How the acquisition was optimized; `encoding` None means over a finite set of points."""
        if encoding is None:
            return {"optimizer": "optimize_acqf_discrete"}
        mixed = encoding.choice_combinations(self.max_choice_combinations) is not None
        return {
            "optimizer": "optimize_acqf_mixed" if mixed else "optimize_acqf",
            "num_restarts": self.num_restarts,
            "raw_samples": self.raw_samples,
            "maxiter": self.maxiter,
        }

    def __post_init__(self) -> None:
        for name in ("num_restarts", "raw_samples", "maxiter", "max_choice_combinations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"optimizer setting {name} must be a positive int, got {value!r}")


def optimize_relaxed(
    acq: AcquisitionFunction, encoding: SpaceEncoding, q: int, settings: OptimizerSettings
) -> Tensor:
    """`q x d` model-space points maximising `acq` (sequential greedy for q > 1); ints still relaxed."""
    kwargs: dict[str, Any] = {
        "bounds": encoding.bounds,
        "q": q,
        "num_restarts": settings.num_restarts,
        "raw_samples": settings.raw_samples,
        "options": {"maxiter": settings.maxiter, "batch_limit": settings.num_restarts},
        "inequality_constraints": encoding.inequality_constraints or None,
        "equality_constraints": encoding.equality_constraints or None,
    }
    ic_gen_kwargs: dict[str, Any] = {}
    if encoding.inequality_constraints or encoding.equality_constraints:
        # BoTorch's own constrained raw samples cost about a second per call (a long Python-loop chain).
        sampler = PolytopeSampler(
            encoding.dim, encoding.inequality_constraints, encoding.equality_constraints
        )
        ic_gen_kwargs["generator"] = polytope_generator(sampler)
    combinations = encoding.choice_combinations(settings.max_choice_combinations)
    if combinations is not None:
        # One optimization per categorical combination: share the restart budget among them so a
        # 3-solvent space costs about what a continuous one does, not three times as much.
        k = len(combinations)
        restarts = max(2, -(-settings.num_restarts // k))
        kwargs["num_restarts"] = restarts
        kwargs["raw_samples"] = max(32, settings.raw_samples // k)
        kwargs["options"] = {**kwargs["options"], "batch_limit": restarts}
        X, _ = optimize_acqf_mixed(
            acq, fixed_features_list=combinations, ic_gen_kwargs=ic_gen_kwargs, **kwargs
        )
    else:  # optimize_acqf forwards extra keywords to the initial-conditions generator
        X, _ = optimize_acqf(acq, sequential=q > 1, **kwargs, **ic_gen_kwargs)
    return X.detach().reshape(q, encoding.dim)


def optimize_over_points(acq: AcquisitionFunction, choices: Tensor, q: int) -> list[int]:
    """Indices of up to `q` distinct rows of `choices` picked greedily by `acq` (pending points respected)."""
    q = min(q, choices.shape[0])
    if q == 0:
        return []
    X, _ = optimize_acqf_discrete(acq, q=q, choices=choices, unique=True)
    picked: list[int] = []
    for x in X:
        matches = torch.nonzero((choices == x).all(dim=-1)).flatten().tolist()
        picked.append(next(i for i in matches if i not in picked))
    return picked


def screen_points(model: Model, best_f: float, choices: Tensor, keep: int) -> Tensor:
    """Indices (ascending) of the `keep` rows of `choices` with the highest analytic LogEI of `model`'s one output.

    A Monte-Carlo noisy EI scores each row on its joint posterior with every observed point: over a pool of
    18,000 rows and 150 observations that is seconds per proposal. Analytic LogEI needs each row's marginal
    posterior only (milliseconds); a row that noisy EI would pick is among the analytic top few hundred.
    """
    acq = LogExpectedImprovement(model, best_f=best_f)
    with torch.no_grad():
        scores = torch.cat([acq(chunk.unsqueeze(1)) for chunk in choices.split(SCREEN_CHUNK)])
    scores = torch.nan_to_num(scores, nan=-math.inf)
    return torch.sort(torch.topk(scores, keep).indices).values


# Rows per posterior call while screening: bounds memory, and the cost is the same per row.
SCREEN_CHUNK = 4096
