"""A transfer between two steps of a line: a robot arm moving the sample (it takes a known time) or the
operator carrying it (they confirm when it is done). Nothing is set and nothing is measured; the step is
in the schedule so its time counts and a sample waiting for it counts towards the next step's max_wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from closedloop.drivers.base import (
    DriverDescription,
    EnvelopeViolation,
    InstrumentContext,
    Measurement,
    SafetyEnvelope,
)
from closedloop.records import Value

TRANSFER_ANALYSIS_VERSION = "1"


class TransferDriver:
    """A `drivers.base.Driver` for a transfer step (see the module docstring)."""

    def __init__(self, by: Literal["robot", "operator"], duration_s: float, to_step: str, *,
                 simulated: bool = False) -> None:
        # `simulated`: a line run on emulators, where an operator's transfer with a duration is played by a
        # simulated operator taking that long (a device made by hand in a day); without one, the person asked.
        self.by, self.duration_s, self.to_step = by, duration_s, to_step
        self.simulated = simulated and by == "operator" and duration_s > 0
        self._description = DriverDescription(name=f"transfer ({by})", envelope=SafetyEnvelope({}), measures={})

    def describe(self) -> DriverDescription:
        return self._description

    def check(self, conditions: Mapping[str, Value]) -> None:
        """A transfer takes no settings: anything given is a mistake of the line, refused."""
        for name, value in conditions.items():
            raise EnvelopeViolation(name, value, "a transfer takes no settings")

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        started = ctx.clock.now()
        if self.simulated:
            ctx.journal("tx", f"simulated operator: sample {ctx.trial_id} to {self.to_step} ({self.duration_s:g} s)")
            ctx.clock.sleep(self.duration_s)
        elif self.by == "operator":
            ctx.confirm(f"move the sample of trial {ctx.trial_id} to {self.to_step} and confirm")
        else:
            ctx.journal("tx", f"move sample {ctx.trial_id} to {self.to_step}")
            ctx.clock.sleep(self.duration_s)
        return Measurement(status="ok", analysis="transfer", analysis_version=TRANSFER_ANALYSIS_VERSION,
                           instrument=self._description.name, detail=f"moved to {self.to_step}",
                           duration_s=ctx.clock.now() - started)

    def safe_state(self) -> None:
        """Nothing to make safe: a transfer holds no setpoint."""

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["TransferDriver"]
