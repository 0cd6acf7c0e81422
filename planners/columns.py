"""Which model-space columns carry information over a pool: constant and duplicated columns are dropped.

A descriptor table often holds columns that are constant over the candidates (an element no compound
contains) or copies of each other up to scale (a sum and a mean over the same two elements, a value in
two units). In model space (`planners.encoding`, min-max scaled) such copies are the same column or its
mirror 1 - x. A GP with one lengthscale per column spreads its prior over them and a forest splits on
them at random; neither learns anything from them. Only a pool can tell: in a continuous space a column
constant among the observations is not constant where the optimizer searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.outcomes import NoUsableData, TrainingData

# Two scaled columns closer than this everywhere are the same column (CSV round-off of a derived value).
DUPLICATE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ColumnSelection:
    """The kept model-space columns (ascending), and what was dropped, by column label."""

    keep: list[int]
    constant: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped, the kept column it repeats)

    @property
    def dropped(self) -> bool:
        return bool(self.constant or self.duplicates)

    def apply(self, X: Tensor) -> Tensor:
        """`X` restricted to the kept columns (last dimension)."""
        return X if not self.dropped else X[..., self.keep]

    def groups(self, groups: Sequence[Sequence[int]]) -> list[list[int]]:
        """Column groups (`SpaceEncoding.column_groups`) renumbered to the kept columns; empty groups left out."""
        position = {column: k for k, column in enumerate(self.keep)}
        renumbered = [[position[c] for c in g if c in position] for g in groups]
        return [g for g in renumbered if g]

    def training(self, data: TrainingData) -> TrainingData:
        """`data` with its inputs restricted to the kept columns."""
        if not self.dropped:
            return data
        return replace(data, X=[self.apply(X) for X in data.X], baseline=self.apply(data.baseline))

    def notes(self) -> list[str]:
        """What was dropped and why, for the proposal's provenance (empty when nothing was)."""
        out = []
        if self.constant:
            out.append(f"{len(self.constant)} input column(s) constant over the pool and the data left out: "
                       f"{_listing(self.constant)}")
        if self.duplicates:
            pairs = [f"{dropped} (= {kept})" for dropped, kept in self.duplicates]
            out.append(f"{len(self.duplicates)} input column(s) duplicating another (up to scale) left out: "
                       f"{_listing(pairs)}")
        return out


def column_labels(encoding: SpaceEncoding) -> list[str]:
    """One label per model-space column: the parameter's name, or `name=value` for a one-hot column."""
    labels = [""] * encoding.dim
    for c in encoding.numeric:
        labels[c.column] = c.parameter.name
    for ch in encoding.choices:
        for j, value in zip(ch.columns, ch.parameter.values, strict=True):
            labels[j] = f"{ch.parameter.name}={value}"
    return labels


def informative_columns(X: Tensor, labels: Sequence[str], mirrors: Sequence[bool] | None = None) -> ColumnSelection:
    """The columns of `X` (all rows that matter: pool, observations, pending) worth modelling.

    Drops columns with a single value and columns equal to an earlier column after min-max scaling over
    these rows, or (where `mirrors[j]`, default all) to its mirror 1 - x. One-hot columns are not
    mirrored: the two columns of a two-valued choice stay one term of the model as before.
    Raises NoUsableData when no column is left.
    """
    values = X.detach().cpu().numpy()
    keep: list[int] = []
    constant: list[str] = []
    duplicates: list[tuple[str, str]] = []
    seen: dict[bytes, int] = {}
    for j in range(values.shape[1]):
        column = values[:, j]
        low, high = column.min(initial=np.inf), column.max(initial=-np.inf)
        if not high - low > DUPLICATE_TOLERANCE:
            constant.append(labels[j])
            continue
        scaled = np.round((column - low) / (high - low) / DUPLICATE_TOLERANCE).astype(np.int64)
        mirror = np.int64(round(1 / DUPLICATE_TOLERANCE)) - scaled
        key = min(scaled.tobytes(), mirror.tobytes()) if mirrors is None or mirrors[j] else scaled.tobytes()
        if key in seen:
            duplicates.append((labels[j], labels[seen[key]]))
            continue
        seen[key] = j
        keep.append(j)
    if not keep:
        raise NoUsableData("every input column is constant over the pool and the observations")
    return ColumnSelection(keep, constant, duplicates)


def pool_columns(encoding: SpaceEncoding, pool_X: Tensor, *known: Tensor) -> ColumnSelection:
    """`informative_columns` over the encoded pool and the encoded known points (observed, pending)."""
    rows = torch.cat([pool_X, *(k[torch.isfinite(k).all(dim=-1)] for k in known)])
    numeric = {c.column for c in encoding.numeric}
    return informative_columns(rows, column_labels(encoding), [j in numeric for j in range(encoding.dim)])


def _listing(items: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown}, ... ({len(items) - most} more)"
