"""Model-free planners: a space-filling Sobol design and uniform random sampling.

They are the initial design and the fallback of the BoTorch planner, and the baselines it is
benchmarked against. Neither proposes a point equal to one already observed, pending, or earlier
in the same batch; both return fewer than `n` proposals only when a finite space or pool runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.pool import candidate_pool
from closedloop.planners.provenance import Proposal, base_provenance, check_request
from closedloop.planners.sampling import derive_seed, isolated_rng, maximin_select, sample_legal
from closedloop.planners.space import Conditions, Observation, Problem

# Cap on the candidates a space-filling pick looks at; plenty for an initial design, cheap to rank.
MAX_SPACE_FILLING_CANDIDATES = 4096


def space_filling(
    encoding: SpaceEncoding,
    existing: Sequence[Conditions],
    n: int,
    seed: int,
    pool: Sequence[Conditions] | None = None,
) -> list[Conditions]:
    """Up to `n` legal points, each the candidate farthest from everything observed, pending or picked.

    Candidates are a scrambled Sobol set a few times larger than the design (or the shuffled pool).
    Picking among them by distance, rather than taking the next Sobol points, keeps the design
    space-filling even though the engine passes a different seed for every trial.
    """
    if pool is not None:
        order = np.random.default_rng(derive_seed(seed, "pool-order")).permutation(len(pool))
        candidates = [pool[i] for i in order[:MAX_SPACE_FILLING_CANDIDATES]]
    else:
        wanted = max(32, 4 * (len(existing) + n))
        size = min(1 << (wanted - 1).bit_length(), MAX_SPACE_FILLING_CANDIDATES)  # Sobol likes powers of two
        candidates = sample_legal(encoding, size, seed, "sobol")
    return [candidates[i] for i in maximin_select(encoding, candidates, existing, n)]


def uniform_points(
    encoding: SpaceEncoding,
    existing: Sequence[Conditions],
    n: int,
    seed: int,
    pool: Sequence[Conditions] | None = None,
) -> list[Conditions]:
    """Up to `n` legal points drawn uniformly (from the pool when given), skipping existing ones."""
    if pool is not None:
        rng = np.random.default_rng(derive_seed(seed, "pool-random"))
        return [pool[i] for i in rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
    seen = {point_key(encoding.space, c) for c in existing}
    out = []
    # A finite space may be mostly known already; elsewhere repeats are rare, a small margin covers them.
    draws = n + len(existing) if encoding.is_finite else 2 * n + 16
    for point in sample_legal(encoding, draws, seed, "random"):
        key = point_key(encoding.space, point)
        if key not in seen:
            seen.add(key)
            out.append(point)
        if len(out) == n:
            break
    return out


InitialDesign = Callable[
    [SpaceEncoding, Sequence[Conditions], int, int, Sequence[Conditions] | None], list[Conditions]
]
INITIAL_DESIGNS: dict[str, InitialDesign] = {"sobol": space_filling, "random": uniform_points}


def initial_design(method: str) -> InitialDesign:
    try:
        return INITIAL_DESIGNS[method]
    except KeyError:
        raise ValueError(
            f"unknown initial design {method!r}; choose one of {sorted(INITIAL_DESIGNS)}"
        ) from None


def check_n_initial(n_initial: int) -> None:
    if not isinstance(n_initial, int) or isinstance(n_initial, bool) or n_initial < 0:
        raise ValueError(f"planner option n_initial must be a non-negative int, got {n_initial!r}")


class _ModelFreePlanner:
    """Shared propose(): `n_initial` points from `initial_method`, then the planner's own rule.

    provenance["design"] is "initial" for initial-design points and the planner's name otherwise.
    """

    name: str
    version = "1"
    rule: InitialDesign

    def __init__(self, n_initial: int = 0, initial_method: str = "sobol") -> None:
        check_n_initial(n_initial)
        self.n_initial = n_initial
        self.initial_method = initial_method
        self._initial = initial_design(initial_method)

    def propose(
        self,
        problem: Problem,
        observations: Sequence[Observation],
        pending: Sequence[Conditions],
        n: int,
        seed: int,
        candidates: pd.DataFrame | None = None,
        pending_fidelities: Sequence[str | None] = (),
    ) -> list[Proposal]:
        check_request(n)
        encoding = SpaceEncoding(problem.space)
        existing = [o.conditions for o in observations] + list(pending)
        initial = len(observations) < self.n_initial
        pool = None if candidates is None else candidate_pool(problem.space, candidates, existing)
        with isolated_rng(seed):
            points = (self._initial if initial else type(self).rule)(encoding, existing, n, seed, pool)
        provenance = base_provenance(self.name, self.version, seed, observations, pending)
        provenance = replace(
            provenance, acquisition=self.initial_method if initial else self.name, design="initial" if initial else self.name
        )
        return [Proposal(conditions=p, provenance=provenance) for p in points]


class SobolPlanner(_ModelFreePlanner):
    """Space-filling design: scrambled Sobol candidates, picked to stay far from all known points."""

    name = "sobol"
    rule = staticmethod(space_filling)


class RandomPlanner(_ModelFreePlanner):
    """Uniform random legal points: the baseline every other planner must beat."""

    name = "random"
    rule = staticmethod(uniform_points)
