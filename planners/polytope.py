"""Uniform-ish samples from the unit cube cut by linear (in)equalities: vectorised hit-and-run.

BoTorch's `get_polytope_samples` runs one chain step by step in a Python loop (about 0.1 ms a
step, 10^4 steps by default), which made constrained proposals cost seconds. Here many short chains
run side by side from a central interior point: each step is a handful of array operations over all
chains, so a few hundred points in ten dimensions cost about a millisecond.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import null_space
from scipy.optimize import linprog
from torch import Tensor

from closedloop.planners.encoding import DTYPE, BotorchConstraint


class PolytopeSampler:
    """Samples of {x in [0, 1]^d : BoTorch-style inequality (>=) and equality constraints}."""

    def __init__(
        self,
        dim: int,
        inequality_constraints: list[BotorchConstraint],
        equality_constraints: list[BotorchConstraint],
    ) -> None:
        self.dim = dim
        ub_rows, ub_rhs = [], []
        for idx, coef, rhs in inequality_constraints:  # a.x >= b  ->  -a.x <= -b
            row = np.zeros(dim)
            np.add.at(row, idx.numpy(), -coef.numpy())
            ub_rows.append(row)
            ub_rhs.append(-rhs)
        eye = np.eye(dim)
        self.A = np.vstack([*ub_rows, eye, -eye]) if ub_rows else np.vstack([eye, -eye])
        self.b = (
            np.concatenate([ub_rhs, np.ones(dim), np.zeros(dim)])
            if ub_rows
            else np.r_[np.ones(dim), np.zeros(dim)]
        )
        eq_rows, eq_rhs = [], []
        for idx, coef, rhs in equality_constraints:
            row = np.zeros(dim)
            np.add.at(row, idx.numpy(), coef.numpy())
            eq_rows.append(row)
            eq_rhs.append(rhs)
        self.A_eq = np.vstack(eq_rows) if eq_rows else np.zeros((0, dim))
        self.b_eq = np.array(eq_rhs)
        self.directions = (
            null_space(self.A_eq) if eq_rows else np.eye(dim)
        )  # d x k: moves that keep equalities
        self.center = self._central_point()

    def _central_point(self) -> np.ndarray:
        """The point farthest from every inequality face (Chebyshev centre), within the equalities."""
        norms = np.linalg.norm(self.A, axis=1)
        result = linprog(
            c=np.r_[np.zeros(self.dim), -1.0],
            A_ub=np.hstack([self.A, norms[:, None]]),
            b_ub=self.b,
            A_eq=np.hstack([self.A_eq, np.zeros((len(self.A_eq), 1))]) if len(self.A_eq) else None,
            b_eq=self.b_eq if len(self.A_eq) else None,
            bounds=[(None, None)] * self.dim + [(0.0, 1.0)],
            method="highs",
        )
        if result.status != 0:
            raise ValueError(
                "the linear constraints cannot all hold inside the parameter bounds; "
                "check the constraint expressions and the bounds"
            )
        assert result.x is not None  # status 0: HiGHS found the optimum, so x is set
        return result.x[: self.dim]

    def sample(self, n: int, rng: np.random.Generator, steps: int | None = None) -> np.ndarray:
        """`n x d` points, each the end of its own hit-and-run chain started at the centre."""
        k = self.directions.shape[1]
        X = np.tile(self.center, (n, 1))
        if k == 0:
            return X
        for _ in range(steps if steps is not None else 20 + 4 * k):
            d = rng.standard_normal((n, k)) @ self.directions.T
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            Ad = d @ self.A.T  # n x rows: rate at which each face is approached
            slack = np.maximum(self.b - X @ self.A.T, 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                limits = slack / Ad
            t_max = np.where(Ad > 1e-12, limits, np.inf).min(axis=1)
            t_min = np.where(Ad < -1e-12, limits, -np.inf).max(axis=1)
            t = t_min + rng.random(n) * (t_max - t_min)
            X = X + np.nan_to_num(t, posinf=0.0, neginf=0.0)[:, None] * d
        return np.clip(X, 0.0, 1.0)


def polytope_generator(sampler: PolytopeSampler):  # noqa: ANN201 - BoTorch's (n, q, seed) -> Tensor callable
    """An initial-conditions generator for `optimize_acqf(ic_gen_kwargs={"generator": ...})`."""

    def generate(n: int, q: int, seed: int | None) -> Tensor:
        # Without a seed, draw one from torch's generator, which the planner has seeded.
        seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        X = sampler.sample(n * q, np.random.default_rng(seed))
        return torch.as_tensor(X, dtype=DTYPE).reshape(n, q, sampler.dim)

    return generate
