"""A line: the protocol's `workflow:` section, the ordered steps every sample passes through.

    workflow:
      coat:                                   # step names are the protocol's to choose
        instrument: {driver: opv_robot, connection: /dev/ttyUSB0}
        parameters: [acceptor_fraction, solvent, spin_speed]
        on_crash: lost                         # a film cannot be spin-coated twice
      anneal:
        instrument: {driver: serial, ...}      # any instrument section, as `instrument:` takes
        parameters: [anneal_temp, anneal_time]
        stations: 2                            # two hot plates side by side
        max_wait: 30 min                       # after the previous step ends, or the sample is failed
      load:
        transfer: operator                     # a person moves the sample and confirms (robot: a timed move);
                                               # with a duration, --sim takes that long instead of asking
      measure:
        instrument: {driver: trmc, connection: socket://trmc-station.lab:5025}
        max_wait: 30 min

Each step receives its `parameters` (every space parameter goes to exactly one step, which `validate`
checks) and measures what its instrument measures; objectives and outcome constraints may name any
step's measurement. `on_crash` says what `resume` does with a sample whose step a crash interrupted and
whose instrument cannot say how it ended: run the step again (`repeat`, a measurement) or record the
sample as lost (`lost`, a process that cannot be undone). A protocol with one `instrument:` is a line of
one step and reads exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from closedloop.controller.protocol.sections import Duration, InstrumentSection, Section, problem_at
from closedloop.drivers.serial_config import check_connection

Transfer = Literal["robot", "operator"]


class StepSection(Section):
    """One step of `workflow:`: an instrument (or a transfer), the parameters it receives, its stations."""

    instrument: InstrumentSection | None = None
    transfer: Transfer | None = None  # a move by a robot (taking `duration`) or by the operator (confirmed)
    # A robot transfer's time ("30 s"). An operator's transfer takes as long as the operator does; its
    # duration (a device made by hand in "24 h") is what `--sim` and the dry run take instead of asking.
    duration: Duration = 0.0
    parameters: list[str] = Field(default_factory=list)
    stations: int = Field(1, ge=1, le=64)
    # One connection per station when the step's instruments are several real ones (two hot plates on two
    # ports); the instrument's own `connection` otherwise.
    connections: list[str] | None = None
    max_wait: Duration | None = None  # longest time from the end of the previous step to the start of this one
    on_crash: Literal["repeat", "lost"] = "repeat"

    @model_validator(mode="after")
    def _instrument_or_transfer(self) -> StepSection:
        if (self.instrument is None) == (self.transfer is None):
            raise problem_at("instrument", "a step runs on an instrument (instrument: {driver: ...}) or is a "
                             "transfer (transfer: robot | operator); give exactly one")
        if self.transfer is not None and self.parameters:
            raise problem_at("parameters", "a transfer receives no parameters; give them to an instrument's step")
        if self.duration < 0:
            raise problem_at("duration", f"a duration cannot be negative, got {self.duration:g} s")
        if self.max_wait is not None and self.max_wait <= 0:
            raise problem_at("max_wait", f"max_wait must be a positive time such as 30 min, got {self.max_wait:g} s")
        if self.connections is not None:
            if self.instrument is None:
                raise problem_at("connections", "a transfer has no connection")
            if len(self.connections) != self.stations:
                raise problem_at("connections", f"{len(self.connections)} connection(s) for {self.stations} station(s): "
                                 "give one for each station")
            for url in self.connections:
                check_connection(url)
        if self.instrument is not None and "stations" in self.instrument.options:
            raise problem_at("instrument", "set how many of this step's instrument run side by side with the "
                             "step's `stations:`, not instrument.options.stations")
        return self


class ScheduleSection(Section):
    """How a line takes samples in: `max_samples_in_line: 1` runs one sample at a time through every step
    (a line with one set of substrate holders, or a comparison); unlimited by default, each new sample
    started when it would not wait past the next step's max_wait."""

    max_samples_in_line: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class Step:
    """One step of a sample's way through the line, as the engine and the report use it."""

    name: str
    index: int
    instrument: InstrumentSection | None  # None: a transfer
    parameters: tuple[str, ...]
    stations: int = 1
    max_wait_s: float | None = None
    repeatable: bool = True  # after a crash mid-step: run it again (else the sample is lost)
    transfer: Transfer | None = None
    duration_s: float = 0.0
    connections: tuple[str, ...] = ()  # one per station, when the step names them

    def station_names(self) -> list[str]:
        """The names the step's stations are journaled under: the step's name, numbered when several."""
        return [self.name] if self.stations == 1 else [f"{self.name}-{i + 1}" for i in range(self.stations)]


def steps_of(workflow: dict[str, StepSection]) -> list[Step]:
    return [
        Step(name, i, s.instrument, tuple(s.parameters), s.stations, s.max_wait, s.on_crash == "repeat",
             s.transfer, s.duration, tuple(s.connections or ()))
        for i, (name, s) in enumerate(workflow.items())
    ]


__all__ = ["ScheduleSection", "Step", "StepSection", "Transfer", "steps_of"]
