"""Seeded legal points: Sobol or uniform draws, constrained spaces, space-filling selection.

Everything here is a pure function of its arguments: randomness comes from a seed, never from
global state, so a planner that uses it stays reproducible bit for bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from closedloop.planners.encoding import DTYPE, RelaxedPoint, SpaceEncoding
from closedloop.planners.polytope import PolytopeSampler
from closedloop.planners.repair import enumerate_legal, make_legal
from closedloop.planners.space import Conditions

Method = Literal["sobol", "random"]


def derive_seed(seed: int, *labels: str) -> int:
    """An independent, stable sub-seed for one purpose; any int (even negative or huge) is accepted."""
    digest = hashlib.sha256(repr((int(seed), *labels)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


@contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch's global generator for the duration, then restore it.

    BoTorch draws initial conditions and retries model fits from the global generator; forking it
    makes those draws a function of `seed` without leaving any trace on the caller's RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "torch"))
        yield


def unit_draws(dim: int, n: int, seed: int, method: Method) -> Tensor:
    if method == "sobol":
        return SobolEngine(dim, scramble=True, seed=seed).draw(n, dtype=DTYPE)
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def sample_legal(encoding: SpaceEncoding, n: int, seed: int, method: Method = "sobol") -> list[Conditions]:
    """`n` legal points (fewer only when the space is finite and smaller), in draw order.

    Unconstrained: Sobol/uniform in the unit cube, then rounding. Inequality constraints: the same
    with rejection of relaxed points outside the polytope, topped up by hit-and-run samples when
    acceptance is low. Equality constraints: hit-and-run directly (rejection would never hit).
    """
    finite = enumerate_legal(encoding)
    if finite is not None:
        if not finite:
            raise ValueError(
                "the search space has no legal point: its constraints exclude every int/choice value"
            )
        order = np.random.default_rng(derive_seed(seed, "finite")).permutation(len(finite))
        return [finite[i] for i in order[:n]]
    points: list[Conditions] = []
    if not encoding.equality_constraints:
        draws = n if not encoding.inequality_constraints else 4 * n + 64
        U = unit_draws(
            len(encoding.numeric) + len(encoding.choices), draws, derive_seed(seed, method), method
        )
        numeric_X = _numeric_to_model(encoding, U[:, : len(encoding.numeric)])
        feasible = _satisfies_inequalities(encoding, numeric_X)
        for i in torch.nonzero(feasible).flatten().tolist():
            legal = make_legal(encoding, _relaxed(encoding, numeric_X[i], U[i, len(encoding.numeric) :]))
            if legal is not None:
                points.append(legal)
            if len(points) == n:
                return points
    missing = n - len(points)
    if missing > 0:
        points += _polytope_points(encoding, 2 * missing, seed, method)[:missing]
    if not points:
        raise ValueError(
            "could not find a legal point: the linear constraints leave no room once ints are on their "
            "step grid; loosen a constraint or a step"
        )
    return points


def _polytope_points(encoding: SpaceEncoding, n: int, seed: int, method: Method) -> list[Conditions]:
    position = {c.column: i for i, c in enumerate(encoding.numeric)}

    def remap(constraints: list) -> list:
        return [(torch.tensor([position[int(j)] for j in idx]), coef, rhs) for idx, coef, rhs in constraints]

    sampler = PolytopeSampler(
        len(encoding.numeric), remap(encoding.inequality_constraints), remap(encoding.equality_constraints)
    )
    samples = sampler.sample(n, np.random.default_rng(derive_seed(seed, "polytope", method)))
    choice_u = unit_draws(max(len(encoding.choices), 1), n, derive_seed(seed, "polytope-choices"), method)
    numeric_X = _numeric_to_model(encoding, torch.as_tensor(samples, dtype=DTYPE))
    points = []
    for i in range(n):
        legal = make_legal(encoding, _relaxed(encoding, numeric_X[i], choice_u[i, : len(encoding.choices)]))
        if legal is not None:
            points.append(legal)
    return points


def _numeric_to_model(encoding: SpaceEncoding, U: Tensor) -> Tensor:
    """Place numeric unit values in their model-space columns (choice columns left at zero)."""
    X = torch.zeros(U.shape[0], encoding.dim, dtype=DTYPE)
    for i, c in enumerate(encoding.numeric):
        X[:, c.column] = U[:, i]
    return X


def _satisfies_inequalities(encoding: SpaceEncoding, X: Tensor) -> Tensor:
    ok = torch.ones(X.shape[0], dtype=torch.bool)
    for idx, coef, rhs in encoding.inequality_constraints:
        ok &= (X[:, idx] * coef).sum(-1) >= rhs - 1e-9
    return ok


def _relaxed(encoding: SpaceEncoding, x: Tensor, choice_u: Tensor) -> RelaxedPoint:
    numeric = {c.parameter.name: c.from_unit(float(x[c.column])) for c in encoding.numeric}
    choices = {}
    for ch, u in zip(encoding.choices, choice_u.tolist(), strict=True):
        k = len(ch.parameter.values)
        choices[ch.parameter.name] = ch.parameter.values[min(int(u * k), k - 1)]
    return RelaxedPoint(numeric, choices)


def maximin_select(
    encoding: SpaceEncoding, candidates: Sequence[Conditions], existing: Sequence[Conditions], n: int
) -> list[int]:
    """Greedily pick up to `n` candidate indices, each farthest (unit-cube distance) from all points so far.

    Candidates that coincide with an existing or already picked point are never chosen, so the
    result is shorter than `n` when the candidates run out.
    """
    if not candidates or n <= 0:
        return []
    C = encoding.encode(candidates)
    E = encoding.encode(existing)
    E = E[torch.isfinite(E).all(dim=-1)]  # a NaN condition says nothing about where not to go
    if E.shape[0]:
        nearest = torch.cdist(C, E).min(dim=1).values
    else:
        nearest = torch.full((len(candidates),), float("inf"), dtype=DTYPE)
    picked: list[int] = []
    for _ in range(min(n, len(candidates))):
        i = int(torch.argmax(nearest))  # first maximum: ties go to the earlier draw
        if nearest[i] <= 1e-12:
            break
        picked.append(i)
        nearest = torch.minimum(nearest, torch.cdist(C, C[i : i + 1]).flatten())
    return picked
