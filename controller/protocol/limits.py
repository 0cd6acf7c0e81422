"""Every value the controller can send has a finite limit before any run starts (issue 19).

Two checks `validate` (and so `run` and `resume`) applies on top of the space-against-envelope check:

- every parameter the planner moves (float, int) has a finite `min` and `max` in the instrument's
  envelope (except where no machine is sent a value: a lookup pool, an instrument run by hand, which
  the space alone bounds); a serial instrument described in YAML declares them under `instrument.envelope`, or says
  `envelope: {unchecked: "why"}` for a bench instrument that limits itself: the one explicit way out,
  shown at start and journaled in the campaign file (`unchecked_warning`);
- a `setup`, `start` or `safe_state` command of a serial instrument that writes a setpoint the `set`
  section knows (e.g. "SOUR:TEMP 600" next to set: {anneal_temp: "SOUR:TEMP {value:.1f}"}) is checked
  against that parameter's limit (a safe state against its maximum only: going safe is going down):
  these are sent outside the planner and the safety gate.

Both return located problems; they take the protocol and its instrument's description and read nothing
else.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING

from closedloop.controller.protocol.instruments import described_by_protocol
from closedloop.controller.protocol.sections import FloatSpec, IntSpec
from closedloop.controller.protocol.yaml_source import ProtocolProblem
from closedloop.drivers.base import DriverDescription, EnvelopeViolation, Limit
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.units import UnitError, compatible, convert

if TYPE_CHECKING:
    from closedloop.controller.protocol.model import Protocol

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def moved_parameters(protocol: Protocol) -> list[str]:
    """The numeric parameters the planner chooses values of (a choice is limited by its own list, a
    fixed value is written by the protocol's author next to the envelope)."""
    return [name for name, spec in protocol.space.items() if isinstance(spec, FloatSpec | IntSpec)]


def unlimited_parameters(protocol: Protocol, description: DriverDescription) -> list[tuple[str, tuple[str, ...]]]:
    """(parameter, the missing ends "min"/"max") of each moved parameter whose limit is open on a side."""
    open_ends = []
    for name in moved_parameters(protocol):
        limit = description.envelope.limits.get(name)
        if limit is None or limit.allowed is not None:
            continue  # refused elsewhere: the instrument does not take this parameter, or not as a number
        missing = tuple(end for end in ("min", "max") if getattr(limit, end) is None)
        if missing:
            open_ends.append((name, missing))
    return open_ends


def missing_limit_problems(protocol: Protocol, description: DriverDescription) -> list[ProtocolProblem]:
    """A problem for each moved parameter without a finite min and max, naming the field to add."""
    section = protocol.the_instrument()
    if described_by_protocol(section):
        return []  # a lookup pool sends nothing: the planner picks rows of its table
    if description.by_hand:
        return []  # a person reads the conditions and does the work: no machine is sent a value
    open_ends = unlimited_parameters(protocol, description)
    if not open_ends or (isinstance(section, SerialInstrumentConfig) and section.envelope.unchecked):
        return []
    if not isinstance(section, SerialInstrumentConfig):
        # A driver written in Python declares its envelope in code: a gap there is the driver's to fix.
        return [protocol.problem(("space", name), f"the {description.name} driver declares no {' or '.join(ends)} for "
                                 f"{name!r}, so nothing would stop the planner's values; the driver must declare one")
                for name, ends in open_ends]
    escape = 'or, for a bench instrument that limits itself, envelope: {unchecked: "why no limit is needed"}'
    if "envelope" not in section.model_fields_set:
        example = ", ".join(f"{name}: {{min: ..., max: ...{_unit_hint(protocol, name)}}}" for name, _ in open_ends)
        names = ", ".join(name for name, _ in open_ends)
        return [protocol.problem(("instrument", "envelope"), (
            f"missing: a serial instrument needs the safe limits of every parameter the planner moves ({names}), "
            f"or the planner may send it any value; add envelope: {{{example}}} {escape}"))]
    problems = []
    for name, ends in open_ends:
        if name not in section.envelope.limits:
            problems.append(protocol.problem(("instrument", "envelope", name), (
                f"missing: the planner moves {name!r} but the envelope does not limit it; add "
                f"{name}: {{min: ..., max: ...{_unit_hint(protocol, name)}}} with the instrument's safe range, {escape}")))
        else:
            problems += [protocol.problem(("instrument", "envelope", name, end), (
                f"missing: the planner moves {name!r}, so its limit needs a {end} as well (a finite number)"))
                for end in ends]
    return problems


def _unit_hint(protocol: Protocol, name: str) -> str:
    unit = getattr(protocol.space.get(name), "unit", "")
    return f", unit: {unit}" if unit else ""


def unchecked_warning(protocol: Protocol) -> str | None:
    """What to show at start and journal when the protocol runs parameters without limits (None if not)."""
    if protocol.is_line:
        warnings = [unchecked_warning(protocol.step_view(step)) for step in protocol.steps() if step.instrument]
        return "; ".join(w for w in warnings if w) or None
    section = protocol.the_instrument()
    if not isinstance(section, SerialInstrumentConfig) or not section.envelope.unchecked:
        return None
    unlimited = unlimited_parameters(protocol, protocol.description_of_instrument())
    if not unlimited:
        return None
    names = ", ".join(name for name, _ in unlimited)
    return (f"UNCHECKED: no envelope limit for {names}: the planner's values are sent as proposed "
            f"(instrument.envelope.unchecked: {section.envelope.unchecked!r})")


def setpoint_command_problems(protocol: Protocol, description: DriverDescription) -> list[ProtocolProblem]:
    """Each `setup`/`start` command that sets a parameter (by its `set` template) to a value its
    envelope limit refuses, located at the command."""
    section = protocol.the_instrument()
    if not isinstance(section, SerialInstrumentConfig):
        return []
    patterns = {name: _template_pattern(command.command) for name, command in section.set.items()}
    problems = []
    for key in ("setup", "start", "safe_state"):
        for i, command in enumerate(getattr(section, key)):
            for name, value in _setpoints(command, patterns):
                limit = description.envelope.limits.get(name)
                wire_unit = section.set[name].unit
                if limit is None or limit.allowed is not None:
                    continue
                if key == "safe_state":
                    # Going safe is going down (heater off, flow 0), often below the range a trial may use:
                    # only a value above the limit is refused there.
                    limit = Limit(max=limit.max, unit=limit.unit)
                reason = _outside(name, value, wire_unit or limit.unit, limit)
                if reason is not None:
                    when = ("sent whenever anything goes wrong or the campaign stops" if key == "safe_state"
                            else "sent before every trial")
                    problems.append(protocol.problem((("instrument", key, i)), (
                        f"{command!r} sets {name} to {value:g} {wire_unit or limit.unit}".rstrip() + f": {reason}; "
                        f"{key} commands are {when}, outside the safety gate, so they must stay "
                        f"inside instrument.envelope.{name}")))
    return problems


def _template_pattern(template: str) -> re.Pattern[str]:
    """`template` ("SOUR:TEMP {value:.1f}") as a pattern matching the commands it writes, the value as
    group 1; case and spacing are free, as SCPI instruments read them."""
    pattern = ""
    for literal, field, _, _ in string.Formatter().parse(template):
        pattern += r"\s*".join(re.escape(word) for word in re.split(r"\s+", literal))
        if field is not None:
            pattern += _NUMBER
    return re.compile(pattern, re.IGNORECASE)


def _setpoints(command: str, patterns: dict[str, re.Pattern[str]]) -> list[tuple[str, float]]:
    """(parameter, value) for the command, and for each part of a compound one ("*CLS;SOUR:TEMP 600")."""
    found = []
    for part in dict.fromkeys([command, *command.split(";")]):
        for name, pattern in patterns.items():
            match = pattern.fullmatch(part.strip())
            if match is not None:
                found.append((name, float(match.group(1))))
    return list(dict.fromkeys(found))


def _outside(name: str, value: float, unit: str, limit: Limit) -> str | None:
    """Why `value` in `unit` is outside `limit` (the runtime gate's own check), or None."""
    try:
        if unit != limit.unit and compatible(unit, limit.unit):
            value = convert(value, unit, limit.unit)
    except UnitError:
        pass  # the set command's unit was checked against the envelope's when the section was read
    try:
        limit.check(name, value)
    except EnvelopeViolation as e:
        return e.reason
    return None


__all__ = ["missing_limit_problems", "moved_parameters", "setpoint_command_problems", "unchecked_warning",
           "unlimited_parameters"]
