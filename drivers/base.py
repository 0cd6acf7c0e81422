"""Records and the narrow interface every instrument driver implements.

A driver declares what it accepts (`SafetyEnvelope`) and what it measures, refuses anything outside
the envelope before a byte is written, and returns a `Measurement`. It never sees a planner or a GP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from closedloop.records import Value

MeasurementStatus = Literal["ok", "failed_sample", "instrument_fault"]


class EnvelopeViolation(ValueError):
    """A request outside the instrument's declared envelope. Never clamped: refused and logged."""

    def __init__(self, parameter: str, value: Any, reason: str) -> None:
        super().__init__(f"{parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


class InstrumentFault(RuntimeError):
    """The instrument or its link misbehaved (timeout, error reply, lost port): retry per policy."""


@dataclass(frozen=True)
class Limit:
    """Hard limits of one settable quantity, in `unit`.

    `max_step`: largest change allowed between consecutive setpoints (e.g. a furnace that must not jump
    more than 200 degC); `max_rate`: ramp-rate limit in `unit` per minute (MBE cells); `allowed`: for
    categorical settings, the values the instrument accepts.
    """

    min: float | None = None
    max: float | None = None
    unit: str = ""
    max_step: float | None = None
    max_rate: float | None = None  # unit per minute
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # NaN compares false with everything and nothing exceeds inf: either would make a limit no limit.
        for label in ("min", "max", "max_step", "max_rate"):
            value = getattr(self, label)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"a limit's {label} must be a finite number, got {value!r}")

    def check(self, name: str, value: Value, previous: Value | None = None) -> None:
        """Raise `EnvelopeViolation` unless `value` (after `previous`) is inside this limit."""
        if self.allowed is not None:
            if value not in self.allowed:
                raise EnvelopeViolation(name, value, f"not one of {list(self.allowed)}")
            return
        if isinstance(value, str | bool):
            raise EnvelopeViolation(name, value, "expected a number")
        v = float(value)
        if not math.isfinite(v):
            raise EnvelopeViolation(name, value, "not a finite number")
        if self.min is not None and v < self.min:
            raise EnvelopeViolation(name, value, f"below the minimum {self.min} {self.unit}".rstrip())
        if self.max is not None and v > self.max:
            raise EnvelopeViolation(name, value, f"above the maximum {self.max} {self.unit}".rstrip())
        if self.max_step is not None and isinstance(previous, int | float) and abs(v - float(previous)) > self.max_step:
            raise EnvelopeViolation(
                name, value, f"step from {previous} exceeds max_step {self.max_step} {self.unit}".rstrip()
            )


@dataclass(frozen=True)
class SafetyEnvelope:
    """Every settable quantity an instrument accepts, with its hard limits."""

    limits: Mapping[str, Limit] = field(default_factory=dict)

    def check(self, conditions: Mapping[str, Value], previous: Mapping[str, Value] | None = None) -> None:
        """Raise `EnvelopeViolation` for the first condition outside the envelope.

        Conditions the envelope does not name are refused too: an instrument only accepts what it declares.
        """
        for name, value in conditions.items():
            limit = self.limits.get(name)
            if limit is None:
                raise EnvelopeViolation(name, value, "the instrument declares no such setting")
            limit.check(name, value, None if previous is None else previous.get(name))


def require_settings(conditions: Mapping[str, Value], names: tuple[str, ...] | list[str], why: str) -> None:
    """Refuse a trial that leaves out a setting the instrument needs every time (before any I/O)."""
    for name in names:
        if name not in conditions:
            raise EnvelopeViolation(name, None, why)


@dataclass(frozen=True)
class DriverDescription:
    """What a driver accepts and what it measures (name -> unit)."""

    name: str
    envelope: SafetyEnvelope
    measures: Mapping[str, str]
    # Parameters the driver needs but the protocol may leave to the driver's default.
    optional_settings: tuple[str, ...] = ()
    # A person runs each trial (driver: manual): nothing is sent to a machine, so there is no envelope of
    # hard limits; the envelope names what the person is shown, and the protocol's space bounds the values.
    by_hand: bool = False


@dataclass
class Measurement:
    """What one trial produced. `values` are scalars in `units`; `artifacts` raw arrays (transients,
    RHEED traces) stored losslessly; `status` separates a bad sample (data for the planner) from an
    instrument fault (retry)."""

    values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    status: MeasurementStatus = "ok"
    artifacts: dict[str, Any] = field(default_factory=dict)
    analysis: str = ""
    analysis_version: str = ""
    instrument: str = ""
    detail: str = ""
    duration_s: float = 0.0  # instrument time the trial took (virtual seconds in simulation)


class Clock(Protocol):
    """Wall time live, virtual time in simulation. Drivers wait through this, never `time.sleep`."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


def _nobody_to_ask(question: str) -> str:
    raise EOFError(f"no operator is attached to answer {question.splitlines()[-1]!r}")


@dataclass
class InstrumentContext:
    """What the engine lends a driver for one trial: the clock, the command journal and the operator."""

    clock: Clock
    trial_id: int
    # journal(direction, text): direction is "tx" (sent) or "rx" (received); stored with a timestamp.
    journal: Callable[[str, str], None] = lambda direction, text: None
    # confirm(message): blocks until the operator confirms a manual step (e.g. load a sample).
    confirm: Callable[[str], None] = lambda message: None
    # ask(question): shows the question (its last line is what to answer) and blocks until the operator
    # answers with one line of text, returned as typed (a value measured by hand). Raises when nobody can
    # answer (the engine's context pauses the campaign then).
    ask: Callable[[str], str] = _nobody_to_ask


class Driver(Protocol):
    """An instrument behind a few verbs (after Bluesky's protocols).

    - `describe()`: the envelope and the measured quantities; no I/O beyond identification.
    - `check(conditions)`: raise `EnvelopeViolation` if a setpoint is not allowed, without moving anything.
    - `run(conditions, ctx)`: set, start, wait, measure; returns a Measurement. Raises `InstrumentFault`
      when the instrument cannot complete it. Must call `check` itself before sending anything.
    - `safe_state()`: put the instrument somewhere harmless (abort, pause, exit). Must not raise.
    - `close()`: release the port.
    """

    def describe(self) -> DriverDescription: ...

    def check(self, conditions: Mapping[str, Value]) -> None: ...

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement: ...

    def safe_state(self) -> None: ...

    def close(self) -> None: ...


# Abilities some drivers have besides the verbs above. The engine asks with isinstance().


@runtime_checkable
class Recoverable(Protocol):
    """A driver whose instrument keeps results: after a crash, `recover` returns the result of a trial
    that was running, or None when the instrument does not have it."""

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None: ...


@runtime_checkable
class Abortable(Protocol):
    """A driver that can stop a trial in progress from another thread and go safe at once (the MBE
    watchdog). The running `run` then ends with an exception."""

    def abort(self) -> None: ...


Journal = Callable[[str, str], None]


@runtime_checkable
class Journaled(Protocol):
    """A driver whose link can be journaled outside a trial (its safe-state commands at a pause belong to
    the campaign): `set_journal(journal)` records every command and reply from now on."""

    def set_journal(self, journal: Journal | None) -> None: ...


ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class DriverEntry(Generic[ConfigT]):
    """A driver as a protocol names it (`instrument.driver`), registered in `drivers.registry`.

    `config` is the pydantic model of what the protocol gives the driver: its `instrument.options`, or,
    with `section=True`, the whole instrument section (the serial driver is described in YAML). `validate`
    checks a protocol against it; `describe(config)` says what the instrument accepts and measures;
    `connect(connection, config)` builds the driver on a link (a device path or URL, sim:// included; ""
    for an instrument run by hand, which has none).
    `emulator` names the wire emulator that stands in for the instrument under `--sim` (in
    `simulators.registry`), None when there is none.
    """

    name: str
    summary: str
    config: type[ConfigT]
    describe: Callable[[ConfigT], DriverDescription]
    connect: Callable[[str, ConfigT], Driver]
    emulator: str | None = None
    section: bool = False
