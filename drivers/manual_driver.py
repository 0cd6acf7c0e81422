"""The manual instrument's driver: a person runs the trial, and `run` asks them for the result through the
operator channel the engine lends every driver (`InstrumentContext.ask`; at a terminal, one line each).

For each trial the operator sees the conditions, rounded for reading and with their units, then is asked
each measured value in turn. A value may carry its own unit ("12 nm", "0.012 um": converted to the
protocol's unit); `f` marks the sample failed (a failed sample is data for the planner, recorded without
values); an answer that cannot be read is asked again with the reason. Last comes an optional note (why
the sample failed, or any remark), stored with the result. Every question and answer is journaled like a
command and its reply.

Nothing is recorded until the whole result has been given: an interrupt or a closed input in between
leaves the trial without a result (the engine abandons it and queues it again).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from closedloop.drivers.base import DriverDescription, InstrumentContext, Measurement
from closedloop.drivers.manual import ManualInstrumentConfig
from closedloop.records import Value
from closedloop.units import UnitError, parse_quantity_to

FAILED = ("f", "failed")
ANALYSIS_VERSION = "1"


class ManualDriver:
    """A `drivers.base.Driver` whose instrument is a person (see the module docstring)."""

    def __init__(self, config: ManualInstrumentConfig) -> None:
        self.config = config
        self._description = config.describe()

    def describe(self) -> DriverDescription:
        return self._description

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse a parameter the protocol does not have, or a label not among a choice's values. There are
        no bounds to check beyond the space's: a person reads the conditions, no machine is sent them."""
        self._description.envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        started = ctx.clock.now()
        header = self._header(ctx.trial_id, conditions)
        values: dict[str, float] = {}
        failed = False
        for i, (name, unit) in enumerate(self.config.measures.items()):
            number = self._value(ctx, name, unit, header if i == 0 else "")
            if number is None:
                failed = True
                break
            values[name] = number
        question = "why did the sample fail? (optional; Enter for none)" if failed else "note (optional; Enter for none)"
        note = _ask(ctx, question)
        return Measurement(
            values={} if failed else values,
            units={} if failed else dict(self.config.measures),
            status="failed_sample" if failed else "ok",
            analysis="manual",
            analysis_version=ANALYSIS_VERSION,
            instrument="manual (entered by the operator)",
            detail=note or ("marked failed by the operator" if failed else "entered by the operator"),
            duration_s=ctx.clock.now() - started,
        )

    def safe_state(self) -> None:
        """Nothing to make safe: no machine is under the controller's command."""

    def close(self) -> None:
        """Nothing to release: there is no port."""

    def _header(self, trial_id: int, conditions: Mapping[str, Value]) -> str:
        """The trial's conditions as the operator reads them: rounded, with units, one per line."""
        limits = self._description.envelope.limits
        width = max((len(name) for name in conditions), default=0)
        lines = [f"trial {trial_id}: run it by hand with"]
        for name, value in conditions.items():
            unit = limits[name].unit if name in limits else ""
            lines.append(f"  {name:<{width}}  {_rounded(value)} {unit}".rstrip())
        if self.config.instructions.strip():
            lines += [f"  {line}".rstrip() for line in self.config.instructions.strip().splitlines()]
        first = ", ".join(f"{name} [{unit}]" if unit else name for name, unit in self.config.measures.items())
        lines.append(f"then enter {first}: a number (a unit if not the one shown, e.g. 12 nm), or f if the sample failed")
        return "\n".join(lines)

    def _value(self, ctx: InstrumentContext, name: str, unit: str, header: str) -> float | None:
        """The value the operator gives for `name` in `unit`, asked again until it can be read; None: failed."""
        question = f"{name} [{unit}]?" if unit else f"{name}?"
        refusal = ""
        while True:
            answer = _ask(ctx, "\n".join(line for line in (header, refusal, question) if line))
            header = ""
            if answer.lower() in FAILED:
                return None
            try:
                value = _number(answer, unit)
            except ValueError as e:
                refusal = f"could not read {answer!r}: {e}"
                continue
            if name in self.config.positive and value <= 0:
                refusal = (f"{name} is modelled on a log scale (log: true in the protocol), so it needs a value > 0; "
                           "check the number and its unit, or type f if the sample failed")
                continue
            return value


def _ask(ctx: InstrumentContext, question: str) -> str:
    ctx.journal("tx", question)
    answer = ctx.ask(question).strip()
    ctx.journal("rx", answer)
    return answer


def _number(answer: str, unit: str) -> float:
    """`answer` ("12", "12 nm", "0.012 um") in `unit`; ValueError saying what to type instead."""
    if not answer:
        raise ValueError("a value is needed; type f if the sample failed")
    try:
        value = parse_quantity_to(answer, unit)
    except UnitError as e:
        raise ValueError(str(e)) from None
    if not math.isfinite(value):
        raise ValueError("not a finite number; type f if the sample gave no usable value")
    return value


def _rounded(value: Value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["ManualDriver"]
