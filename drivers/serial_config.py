"""The `instrument` section of a protocol for `driver: serial`: a generic SCPI-style instrument
described, not coded (see protocols/serial_furnace.yaml). Strict pydantic models: unknown keys are
refused, and each error names the field and says what to write instead.

Sections: `connection`, `serial` (line settings), `identify`, `setup`, `set` (a command template per
parameter, optionally with the unit the instrument wants), `start`, `wait` (poll / duration /
duration_from, after an optional fixed `delay`), `measure` (query + parse: float | int | list | regex |
block), `error_query`, `safe_state`, `envelope` (limits per parameter, plus `min_interval` between
setpoint changes). The sections' models live in `drivers.serial_sections`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from closedloop.drivers.base import DriverDescription, SafetyEnvelope
from closedloop.drivers.serial_sections import (
    Commands,
    EnvelopeLimit,
    EnvelopeSection,
    Identify,
    MeasureSpec,
    SerialSettings,
    SetCommand,
    StartCommands,
    Strict,
    WaitSpec,
    located,
)
from closedloop.drivers.serial_simulate import DescribedSimulation, SimulateSection, check_described
from closedloop.drivers.visa_port import check_visa_url
from closedloop.units import is_time_unit, parse_unit

__all__ = [
    "SERIAL_KEYS",
    "EnvelopeLimit",
    "EnvelopeSection",
    "Identify",
    "MeasureSpec",
    "SerialInstrumentConfig",
    "SerialSettings",
    "SetCommand",
    "WaitSpec",
    "check_connection",
]

_SCHEMES = ("socket", "rfc2217", "loop", "spy", "hwgrep", "alt", "sim", "visa")
_HOST_PORT = re.compile(r"^[^:/\s]+:(\d+)(/.*)?$")


def check_connection(url: str) -> str:
    """`url` if it is a device path or a pyserial URL (or sim://MODEL, visa://RESOURCE); ValueError saying
    what to write."""
    usage = ("use a device path (/dev/ttyUSB0, COM3), socket://HOST:PORT, rfc2217://HOST:PORT, loop://, sim://MODEL "
             "or visa://RESOURCE (e.g. visa://GPIB0::12::INSTR)")
    if "://" not in url:
        if url.startswith("/") or re.fullmatch(r"COM\d+", url, re.IGNORECASE):
            return url
        raise ValueError(f"{url!r} is not a serial port or URL; {usage}")
    scheme, rest = url.split("://", 1)
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown connection scheme '{scheme}://'; {usage}")
    if scheme in ("socket", "rfc2217"):
        match = _HOST_PORT.match(rest)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(f"{url!r}: {scheme}:// needs HOST:PORT with a port in 1..65535")
    if scheme == "visa":
        return check_visa_url(url)
    if scheme == "sim" and not rest.strip("/"):
        raise ValueError("sim:// needs a model name, e.g. sim://furnace")
    return url


class SerialInstrumentConfig(Strict):
    """The whole `instrument` section for `driver: serial`."""

    driver: Literal["serial"] = "serial"
    connection: str = Field(min_length=1)
    # Engine-level settings shared by every driver (e.g. `stations`); the serial driver reads none of them.
    options: dict[str, Any] = {}
    serial: SerialSettings = SerialSettings()
    identify: Identify | None = None
    setup: Commands = []
    set: dict[str, SetCommand] = {}
    # Declared before `wait` so the validators below can look up `set` and `envelope`.
    envelope: EnvelopeSection = EnvelopeSection()
    start: StartCommands = []
    wait: WaitSpec | None = None
    # Checked even when left out, so a missing section gets the message below rather than "missing".
    measure: dict[str, MeasureSpec] = Field(default_factory=dict, validate_default=True)
    error_query: str | None = None
    safe_state: Commands = []
    # How a dry run imitates this instrument when the project has no emulator of it (drivers.serial_simulate).
    simulate: SimulateSection | None = None

    @field_validator("connection")
    @classmethod
    def _connection(cls, url: str) -> str:
        return check_connection(url)

    # A command alone stands for {command: ...}; the schema for editors says both forms are fine.
    @field_validator("set", mode="before", json_schema_input_type=dict[str, SetCommand | str])
    @classmethod
    def _set_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"command": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("measure", mode="before", json_schema_input_type=dict[str, MeasureSpec | str])
    @classmethod
    def _measure_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"query": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("measure")
    @classmethod
    def _measures_something(cls, value: dict[str, MeasureSpec]) -> dict[str, MeasureSpec]:
        if not value:
            raise ValueError(
                "a serial instrument needs a measure section: a query for each measured quantity, "
                "e.g. {sheet_resistance: \"FETC:RES?\"}"
            )
        return value

    @field_validator("wait", mode="before")
    @classmethod
    def _wait_shorthand(cls, value: Any) -> Any:
        return {"duration": value} if isinstance(value, str | int | float) and not isinstance(value, bool) else value

    @field_validator("identify", mode="before")
    @classmethod
    def _identify_shorthand(cls, value: Any) -> Any:
        return {"query": value} if isinstance(value, str) else value

    @field_validator("envelope")
    @classmethod
    def _envelope_matches_set(cls, envelope: EnvelopeSection, info: ValidationInfo) -> EnvelopeSection:
        settable: dict[str, SetCommand] | None = info.data.get("set")
        if settable is None:
            return envelope  # `set` itself is invalid and already reported
        unknown = sorted(set(envelope.limits) - set(settable))
        if unknown:
            raise located(
                unknown[0],
                f"envelope names {unknown}, which `set` does not send; add a `set` entry or remove the limit "
                f"(settable: {sorted(settable) or 'none'})",
            )
        for name, limit in envelope.limits.items():
            wire_unit = settable[name].unit
            if limit.unit and wire_unit and not parse_unit(limit.unit).is_compatible_with(parse_unit(wire_unit)):
                raise located((name, "unit"), f"{name}: unit {limit.unit!r} cannot be converted to the command's unit {wire_unit!r}")
        return envelope

    @field_validator("wait")
    @classmethod
    def _duration_from_is_a_time(cls, wait: WaitSpec | None, info: ValidationInfo) -> WaitSpec | None:
        settable: dict[str, SetCommand] | None = info.data.get("set")
        envelope: EnvelopeSection | None = info.data.get("envelope")
        if wait is None or wait.duration_from is None or settable is None or envelope is None:
            return wait
        name = wait.duration_from
        if name not in settable:
            raise located("duration_from", f"duration_from names {name!r}, which is not a `set` parameter ({sorted(settable)})")
        if not is_time_unit(_parameter_unit(name, settable, envelope)):
            raise located("duration_from", f"duration_from: {name!r} has no time unit; give it one in `envelope` or `set` (e.g. unit: min)")
        return wait

    @model_validator(mode="after")
    def _commands_fit_the_encoding(self) -> SerialInstrumentConfig:
        encoding = self.serial.encoding
        commands = [*self.setup, *self.start, *self.safe_state, *(s.command for s in self.set.values()),
                    *(m.query for m in self.measure.values())]
        commands += [q for q in (self.error_query, self.identify and self.identify.query,
                                 self.wait and self.wait.query) if q]
        for command in commands:
            try:
                command.encode(encoding)
            except UnicodeEncodeError:
                raise ValueError(
                    f"command {command!r} cannot be sent in the line's encoding {encoding!r}; "
                    "remove the special characters or set serial.encoding (e.g. utf-8)"
                ) from None
        return self

    @model_validator(mode="after")
    def _simulation_fits(self) -> SerialInstrumentConfig:
        if isinstance(self.simulate, DescribedSimulation):
            check_described(self.simulate, settable=self.set, measure=self.measure, parameter_unit=self.parameter_unit,
                            identify=self.identify, wait=self.wait)
        return self

    def parameter_unit(self, name: str) -> str:
        """The unit conditions for `name` arrive in: the envelope's, else the command's, else none."""
        return _parameter_unit(name, self.set, self.envelope)

    def describe(self) -> DriverDescription:
        """What the instrument accepts: every `set` parameter, in `parameter_unit`, bounded where the
        envelope says (a parameter without an envelope entry takes any number); and what it measures."""
        limits = {
            name: self.envelope.limits.get(name, EnvelopeLimit()).to_limit(self.parameter_unit(name)) for name in self.set
        }
        measures = {name: spec.unit for name, spec in self.measure.items()}
        return DriverDescription(name="serial", envelope=SafetyEnvelope(limits), measures=measures)


SERIAL_KEYS = tuple(k for k in SerialInstrumentConfig.model_fields if k not in ("driver", "connection", "options"))


def _parameter_unit(name: str, settable: dict[str, SetCommand], envelope: EnvelopeSection) -> str:
    limit = envelope.limits.get(name)
    return (limit.unit if limit and limit.unit else None) or settable[name].unit or ""

