"""A model step's view of a candidate pool: the encoded rows on their informative columns, and a screen.

`pool_view` encodes the pool once (without a row loop for a parsed table, `CandidatePool.encoded`) and
keeps only the columns worth modelling (`planners.columns`); `PoolView.screened` narrows a large pool to
the rows a Monte-Carlo acquisition is worth evaluating on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from closedloop.planners.acquisition import SINGLE_OBJECTIVE
from closedloop.planners.columns import ColumnSelection, pool_columns
from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.models import FittedModels
from closedloop.planners.optimize import screen_points
from closedloop.planners.outcomes import TrainingData
from closedloop.planners.pool import CandidatePool
from closedloop.planners.space import Conditions


@dataclass(frozen=True)
class PoolView:
    pool: Sequence[Conditions]
    choices: Tensor  # len(pool) x kept columns, model space
    selection: ColumnSelection

    def groups(self, groups: Sequence[Sequence[int]]) -> list[list[int]]:
        return self.selection.groups(groups)

    def screened(self, acquisition: str, fitted: FittedModels, data: TrainingData, keep: int) -> tuple[Tensor, dict[str, Any]]:
        """The pool rows to optimize `acquisition` over, and what the screen did (for the provenance settings).

        Only qLogNEI of one modelled objective over more than `keep` rows is screened (`keep` 0: never): its
        cost grows with rows x observations; analytic LogEI is already one marginal posterior per row, and
        constraints or several objectives would need the screen to know them too.
        """
        everything = torch.arange(len(self.pool))
        if keep < 1 or len(self.pool) <= keep or acquisition != SINGLE_OBJECTIVE or len(fitted.outcomes) != 1:
            return everything, {}
        with torch.no_grad():
            # As analytic LogEI in `build_acquisition`: the incumbent is the best posterior mean where observed.
            best_f = float(fitted.model.posterior(data.baseline).mean.max())  # type: ignore[attr-defined]
        rows = screen_points(fitted.model, best_f, self.choices, keep)
        return rows, {
            "pool_screen": f"{keep} of {len(self.pool)} rows by analytic LogEI (best_f {best_f:.6g}), then {acquisition}"
        }


def pool_view(encoding: SpaceEncoding, pool: Sequence[Conditions], data: TrainingData, X_pending: Tensor) -> PoolView:
    """The pool encoded, on the columns that vary and differ over it and the observed and pending points."""
    choices = pool.encoded(encoding) if isinstance(pool, CandidatePool) else encoding.encode(pool)
    selection = pool_columns(encoding, choices, *data.X, X_pending)
    return PoolView(pool, selection.apply(choices), selection)
