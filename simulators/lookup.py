"""A real-data lookup pool as an instrument (`sim:lookup`): each "experiment" reveals the recorded
outcome of one row of a candidate table, as in pool-based benchmarks (Liang et al. 2021)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import SupportsFloat, cast

import numpy as np
import pandas as pd

from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Limit,
    Measurement,
    SafetyEnvelope,
    Value,
)


def describe_pool(table: pd.DataFrame, inputs: Sequence[str], outputs: Sequence[str]) -> DriverDescription:
    """Accepts exactly the values present in each input column; measures the output columns."""
    limits: dict[str, Limit] = {}
    for name in inputs:
        col = table[name]
        if pd.api.types.is_numeric_dtype(col):
            limits[name] = Limit(min=float(col.min()), max=float(col.max()))
        else:
            limits[name] = Limit(allowed=tuple(sorted(map(str, col.unique()))))
    return DriverDescription("sim:lookup", SafetyEnvelope(limits), {name: "" for name in outputs})


class LookupInstrument:
    """Reveals the outputs of the table row whose inputs equal the requested conditions."""

    def __init__(
        self,
        table: pd.DataFrame,
        inputs: Sequence[str],
        outputs: Sequence[str],
        *,
        units: Mapping[str, str] | None = None,
        duration_s: float = 60.0,
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.units = dict(units or {})
        self.duration_s = duration_s
        self._description = describe_pool(self.table, self.inputs, self.outputs)
        self._index = {self._key(row): i for i, row in enumerate(self.table[self.inputs].itertuples(index=False))}

    @staticmethod
    def _key(values: Sequence[Value]) -> tuple:
        return tuple(round(float(v), 9) if isinstance(v, int | float | np.number) else str(v) for v in values)

    def describe(self) -> DriverDescription:
        return self._description

    def check(self, conditions: Mapping[str, Value]) -> None:
        self._description.envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        key = self._key([conditions[n] for n in self.inputs])
        ctx.journal("tx", "LOOKUP " + " ".join(f"{n}={conditions[n]}" for n in self.inputs))
        row = self._index.get(key)
        if row is None:
            raise InstrumentFault(f"no candidate row matches {dict(conditions)}")
        ctx.clock.sleep(self.duration_s)
        # Output cells hold numbers; pandas-stubs types a cell as any scalar (None, dates, intervals...).
        values = {name: float(cast(SupportsFloat, self.table.at[row, name])) for name in self.outputs}
        ctx.journal("rx", " ".join(f"{k}={v!r}" for k, v in values.items()))
        return Measurement(
            values=values,
            units={n: self.units.get(n, "") for n in self.outputs},
            instrument="sim:lookup",
            analysis="lookup",
            analysis_version="1",
            duration_s=self.duration_s,
            detail=f"row {row}",
        )

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return None

    def safe_state(self) -> None:
        pass

    def close(self) -> None:
        pass
