"""The `simulate:` part of a serial instrument's description: how a dry run (or `--sim`, or
`closedloop emulate --protocol FILE`) imitates an instrument the project has no emulator for.

Two forms:

- a described simulation: the instrument answers its own protocol's commands. Setpoints are whatever
  the `set` commands last sent; `identity` answers the identify query; after a `start` command the
  instrument is busy for `process_time` (or as long as a set parameter says) and answers the wait query
  with `busy`, then `ready`; each measured quantity is a formula of the setpoints (in the parameters'
  units, `closedloop.formulas`) with relative or absolute noise; the error query answers `no_error`,
  or the error a refused command queued (a setpoint outside the instrument's own `ranges`, a command the
  protocol never sends). `simulators.described` builds the model.

      simulate:
        identity: "IKA RCT digital"
        process_time_from: stir_time
        measure:
          viscosity_trend: {value: "40 * exp(-((plate_temp - 140) / 35)**2) + stir_speed / 100", noise: 2 %}

- a pyvisa-sim device file (`pyvisa_sim: FILE`, the format instrument-driver projects use to test
  without hardware), served through the `visa://` link with pyvisa-sim's backend; `resource` picks the
  device in the file (default: the connection's resource when it is a visa:// link).

      simulate: {pyvisa_sim: hotplate.sim.yaml, resource: "ASRL1::INSTR"}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator

from closedloop.drivers.options import Duration, Strict, located
from closedloop.drivers.scpi import ScpiParseError, parse_list, parse_number, parse_regex
from closedloop.drivers.serial_sections import Identify, MeasureSpec, WaitSpec
from closedloop.formulas import FormulaError, parse_formula
from closedloop.units import is_time_unit

_PERCENT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*%\s*$")


def _noise(value: Any) -> Any:
    """`2 %` (relative to the value) or a number (absolute, in the quantity's unit) -> (kind, size)."""
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match is None:
            raise ValueError(f"noise {value!r}: write a relative noise such as '2 %' or an absolute one as a number")
        return {"relative": float(match.group(1)) / 100.0}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"absolute": float(value)}
    return value


class Noise(Strict):
    """Normal noise on a simulated reading: `relative` (a fraction of the value) or `absolute`."""

    relative: float = Field(0.0, ge=0.0, le=10.0)
    absolute: float = Field(0.0, ge=0.0)


class SimulatedReading(Strict):
    """One measured quantity of a described simulation: `value`, a formula of the set parameters (in
    their units); `noise`; `points`, how many values a list or block reply carries (each with its own
    noise); `reply`, a template for the reply text (`{value}`), e.g. "R={value:.4g} OHM" for a reply
    parsed with a pattern (default: the bare number)."""

    value: str
    noise: Annotated[Noise, BeforeValidator(_noise)] = Noise()
    points: int = Field(1, ge=1, le=100_000)
    reply: str = "{value:.6g}"

    @field_validator("value")
    @classmethod
    def _arithmetic(cls, text: str) -> str:
        try:
            parse_formula(text, None)  # names are checked against the set parameters by the section
        except FormulaError as e:
            raise ValueError(str(e)) from None
        return text

    @field_validator("reply")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            template.format(value=1.5)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ValueError(f"reply {template!r} must be a template with one {{value}} field, e.g. "
                             f"'R={{value:.4g}} OHM' ({e})") from None
        return template


class DeviceRange(Strict):
    """The range the instrument itself accepts for a setpoint, in the parameter's unit: a value outside
    is refused with an error in the queue, the setpoint left as it was (as a real controller does)."""

    min: float
    max: float


class DescribedSimulation(Strict):
    """How a dry run imitates the instrument: `identity` answers the identify query; after a `start`
    command the wait query gets `busy` for `process_time` (or as long as the set parameter
    `process_time_from` says), then `ready`; each `measure` entry is a formula of the set parameters (in
    their units) with noise; `ranges` are the setpoints the instrument itself accepts; the error query
    answers `no_error`, or `error` / `unknown_command` for a refused setpoint or an unknown command."""

    identity: str | None = None
    process_time: Duration | None = None
    process_time_from: str | None = None
    busy: str = "BUSY"
    ready: str = "IDLE"
    measure: dict[str, SimulatedReading]
    ranges: dict[str, DeviceRange] = {}
    no_error: str = '0,"No error"'
    error: str = '-222,"Data out of range"'
    unknown_command: str = '-113,"Undefined header"'

    @field_validator("measure", mode="before", json_schema_input_type=dict[str, SimulatedReading | str | float])
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"value": str(v)} if isinstance(v, str | int | float) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value


class PyvisaSimFile(Strict):
    """A pyvisa-sim device file, relative to the protocol's folder, and the resource in it to open."""

    pyvisa_sim: str = Field(min_length=1)
    resource: str | None = None


def _simulate_kind(value: Any) -> str:
    if isinstance(value, dict):
        return PyvisaSimFile.__name__ if "pyvisa_sim" in value else DescribedSimulation.__name__
    return type(value).__name__


# Tags are the class names, as for the instrument section (controller.protocol.sections): error locations
# skip them, and a misspelled key is matched against the form the author meant.
SimulateSection = Annotated[
    Annotated[DescribedSimulation, Tag(DescribedSimulation.__name__)]
    | Annotated[PyvisaSimFile, Tag(PyvisaSimFile.__name__)],
    Discriminator(_simulate_kind),
]


def check_described(
    simulation: DescribedSimulation,
    *,
    settable: Collection[str],
    measure: Mapping[str, MeasureSpec],
    parameter_unit: Callable[[str], str],
    identify: Identify | None,
    wait: WaitSpec | None,
) -> None:
    """Refuse a described simulation that could not stand in for the instrument its section describes
    (`settable`: the `set` parameters, `measure`, `identify` and `wait` as there): a
    measured quantity without a reading (or a reading of nothing measured), a formula over a name `set`
    does not send, an identity the identify query would refuse, a wait that would never (or at once)
    end, a reply its own `measure` entry could not parse. Raises `located` errors under `simulate`."""
    settable = set(settable)
    missing = [name for name in measure if name not in simulation.measure]
    if missing:
        raise located(("simulate", "measure"), f"simulate.measure needs a reading for {', '.join(missing)} (what "
                      "`measure` queries), e.g. {" + f"{missing[0]}: \"2 * {next(iter(sorted(settable)), 'x')} + 1\"" + "}")
    for name, reading in simulation.measure.items():
        where = ("simulate", "measure", name)
        if name not in measure:
            raise located(where, f"{name!r} is not measured (measure: {', '.join(measure)}); remove it")
        try:
            parse_formula(reading.value, settable)
        except FormulaError as e:
            raise located((*where, "value"), f"{e} (a formula of the `set` parameters, in their units)") from None
        _check_reply(reading, measure[name], where)
    for name in simulation.ranges:
        if name not in settable:
            raise located(("simulate", "ranges", name), f"{name!r} is not a `set` parameter ({', '.join(sorted(settable))})")
    if simulation.process_time_from is not None:
        name = simulation.process_time_from
        if name not in settable or not is_time_unit(parameter_unit(name)):
            raise located(("simulate", "process_time_from"),
                          f"process_time_from names {name!r}: it must be a `set` parameter with a time unit")
    expect = identify.expect if identify is not None else None
    if expect is not None and (simulation.identity is None or re.search(expect, simulation.identity) is None):
        raise located(("simulate", "identity"), f"identify.expect is {expect!r}: give the simulated instrument an "
                      "identity it matches, e.g. identity: \"MAKER,MODEL,SN1,1.0\"")
    if wait is not None and wait.query is not None and wait.until is not None:
        if re.search(wait.until, simulation.ready) is None:
            raise located(("simulate", "ready"), f"the wait ends when {wait.query} matches {wait.until!r}, which "
                          f"ready {simulation.ready!r} does not: the simulated run would never end")
        if re.search(wait.until, simulation.busy) is not None:
            raise located(("simulate", "busy"), f"busy {simulation.busy!r} matches wait.until {wait.until!r}: "
                          "the wait would end before the run does; write what the instrument says while running")


def _check_reply(reading: SimulatedReading, spec: MeasureSpec, where: tuple[str, ...]) -> None:
    """The reply of a simulated reading must read back through the protocol's own parsing."""
    if spec.parse == "block":
        return  # the model sends a binary block of `points` values in spec.dtype
    text = reading.reply.format(value=1.5)
    if spec.parse == "list":
        text = ",".join([text] * reading.points)
    try:
        if spec.parse == "list":
            parse_list(text)
        elif spec.pattern is not None or spec.parse == "regex":
            parse_regex(text, spec.pattern or "")
        else:
            parse_number(text)
    except ScpiParseError as e:
        raise located((*where, "reply"), f"the reply {text!r} would not parse as measure's {spec.parse} ({e}); write "
                      "a reply template the pattern reads, e.g. 'R={value:.4g} OHM'") from None
