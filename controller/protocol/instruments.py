"""What the instrument a protocol names accepts, measures and takes as options.

`instrument.driver` is a registered driver (`drivers.registry`: serial, trmc, mbe, manual) or a simulated
instrument `sim:NAME` (`simulators.registry`); `catalog` joins the two. Each declares the model its
options are validated with, so `closedloop validate` refuses what `run` could not use, at FILE:LINE:COL.

Two options belong to the engine, not to any driver: `stations` (how many of the instrument run side by
side) and `faults` (faults injected into an in-process emulator, see `simulators.faults`).

Everything here takes the protocol's parts as arguments (`controller.protocol.model.Protocol` calls it
with its own), so the model and this module do not import each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from closedloop.controller.protocol.catalog import SIM, instrument
from closedloop.controller.protocol.sections import (
    ChoiceSpec,
    FixedSpec,
    InstrumentSection,
    ObjectiveSpec,
    Section,
)
from closedloop.controller.protocol.yaml_source import (
    FieldPath,
    ProtocolProblem,
    SourceMap,
    problems_from_validation_error,
)
from closedloop.drivers.base import DriverDescription, DriverEntry, Limit, SafetyEnvelope
from closedloop.drivers.manual import ManualInstrumentConfig
from closedloop.drivers.serial_config import EnvelopeLimit, EnvelopeSection, SerialInstrumentConfig
from closedloop.records import Conditions, Value
from closedloop.simulators.faults import FaultSpecError, parse_fault_spec
from closedloop.simulators.registry import EMULATORS, SimulatedInstrument, WireEmulator, emulator_name
from closedloop.units import convert

if TYPE_CHECKING:
    import pandas as pd

ENGINE_OPTIONS = ("stations", "faults")


class InstrumentDescriptionError(ValueError):
    """The protocol's instrument cannot be described; `path` is the protocol field to point at."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(message)
        self.path = path


class StationOptions(Section):
    """The engine's part of `instrument.options`."""

    stations: int = Field(1, ge=1)  # stations of this instrument running side by side
    faults: str = ""  # faults injected into an in-process emulator (sim://), e.g. "no_reply:0.1"

    @field_validator("faults")
    @classmethod
    def _fault_spec(cls, spec: str) -> str:
        try:
            parse_fault_spec(spec)
        except FaultSpecError as e:
            raise ValueError(str(e)) from None
        return spec


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the engine's options, the driver's options) of an `instrument.options` mapping."""
    engine = {k: v for k, v in options.items() if k in ENGINE_OPTIONS}
    return engine, {k: v for k, v in options.items() if k not in ENGINE_OPTIONS}


def station_options(section: InstrumentSection) -> StationOptions:
    """The engine's options; raises pydantic's ValidationError (`option_problems` locates it)."""
    return StationOptions.model_validate(split_options(section.options)[0])


def driver_options(section: InstrumentSection) -> BaseModel:
    """The driver's validated config: its options model, or the whole section for a driver described in
    the protocol (serial). Raises pydantic's ValidationError (`option_problems` locates it)."""
    entry = instrument(section.driver)
    if isinstance(entry, DriverEntry) and entry.section:
        return section
    model = entry.config if isinstance(entry, DriverEntry) else entry.options
    return model.model_validate(split_options(section.options)[1])


def option_problems(section: InstrumentSection, source: SourceMap) -> list[ProtocolProblem]:
    """Every problem with `instrument.options`, located: unknown names, wrong types, unsafe values."""
    found: list[ProtocolProblem] = []
    at: FieldPath = ("instrument", "options")
    engine, own = split_options(section.options)
    entry = instrument(section.driver)
    checks: list[tuple[type[BaseModel], dict[str, Any]]] = [(StationOptions, engine)]
    if isinstance(entry, SimulatedInstrument) or not entry.section:
        checks.append((entry.options if isinstance(entry, SimulatedInstrument) else entry.config, own))
    else:
        found += [source.problem((*at, key), f"unknown option {key!r}; the {section.driver} driver takes "
                                 f"its settings in its own sections; options takes: {', '.join(ENGINE_OPTIONS)}")
                  for key in own]
    for model, given in checks:
        try:
            model.model_validate(given)
        except ValidationError as e:
            found += problems_from_validation_error(e, source, model, prefix=at)
    return found


# ---- what the instrument accepts and measures -----------------------------------------------------


def described_by_protocol(section: InstrumentSection) -> bool:
    """True for an instrument whose envelope the protocol itself gives (a lookup pool's table)."""
    entry = instrument(section.driver)
    return isinstance(entry, SimulatedInstrument) and entry.description is None


def emulator_problem(driver: str, connection: str | None, section: InstrumentSection | None = None) -> str | None:
    """What is wrong with a `sim://NAME` connection for `driver`: no such emulator, one that speaks
    another driver's wire protocol, or (for an instrument the protocol describes, `section`) an emulator
    of another instrument. None when the connection is fine (or not sim://)."""
    name = emulator_name(connection)
    entry = instrument(driver)
    if name is None or not isinstance(entry, DriverEntry):
        return None
    speaking = [e.name for e in EMULATORS.values() if e.driver == entry.name]
    if name not in EMULATORS:
        return f"no emulated instrument {name!r}; known for driver {entry.name}: {', '.join(speaking) or 'none'}"
    if EMULATORS[name].driver != entry.name:
        return (f"the {name} emulator speaks the {EMULATORS[name].driver} driver's wire protocol, not {entry.name}'s; "
                f"use {', '.join('sim://' + n for n in speaking) or 'a real connection'}")
    if isinstance(section, SerialInstrumentConfig):
        return _another_instrument(EMULATORS[name], section)
    return None


def _another_instrument(emulator: WireEmulator, section: SerialInstrumentConfig) -> str | None:
    """Why `emulator` cannot stand in for the instrument `section` describes, or None.

    A generic serial driver talks to whatever answers; a dry run against the built-in furnace of a
    protocol written for some other instrument would only "find" that the furnace is not that
    instrument, and blame the real one. So the stand-in must identify as what the protocol expects and
    take every parameter it sets and quantity it measures."""
    stand_in = f"sim://{emulator.name} ({emulator.summary})"
    remedy = (f"sim://{emulator.name} and --sim stand in for that instrument only; dry-run this protocol with "
              "--port pointing at an emulator of this instrument (or the instrument itself)")
    expect = section.identify.expect if section.identify is not None else None
    if expect is not None and emulator.identity is not None and not re.search(expect, emulator.identity):
        return (f"the protocol expects an instrument identifying as {expect!r} (identify.expect), but "
                f"{stand_in} identifies as {emulator.identity!r}; {remedy}")
    if emulator.accepts is None:
        return None
    foreign = [f"set.{n}" for n in section.set if n not in emulator.accepts.envelope.limits]
    foreign += [f"measure.{n}" for n in section.measure if n not in emulator.accepts.measures]
    if foreign:
        return (f"{stand_in} has no {', '.join(foreign)} (it takes {', '.join(emulator.accepts.envelope.limits)} "
                f"and measures {', '.join(emulator.accepts.measures)}); {remedy}")
    return None


def describe_instrument(
    section: InstrumentSection,
    space: Mapping[str, Any],
    objectives: Mapping[str, ObjectiveSpec],
    candidates: Callable[[], pd.DataFrame | None],
) -> DriverDescription:
    """The envelope and measured quantities of the protocol's instrument.

    For a lookup pool (a simulated instrument the protocol describes) this reads the candidate table:
    `InstrumentDescriptionError` when the protocol has none, `ProtocolError` (located at candidates.path)
    when it cannot be read.
    """
    entry = instrument(section.driver)
    if isinstance(entry, SimulatedInstrument):
        if entry.description is not None:
            return entry.description
        return _pool_description(section.driver, space, objectives, candidates)
    if entry.section:
        return entry.describe(section_config(section, space))
    return entry.describe(driver_options(section))


def run_by_hand(section: InstrumentSection) -> bool:
    """True for an instrument a person operates (`driver: manual`): no connection, no envelope of hard
    limits, and an operator who enters every result."""
    entry = instrument(section.driver)
    return isinstance(entry, DriverEntry) and entry.section and entry.describe(section).by_hand


def instrument_location(section: InstrumentSection) -> str:
    """Where the protocol's instrument is, for people: its connection, by hand, or a simulator."""
    if run_by_hand(section):
        return "by hand (an operator enters each result)"
    return section.connection or "an in-process simulator"


def section_config(
    section: InstrumentSection, space: Mapping[str, Any], positive: frozenset[str] = frozenset()
) -> BaseModel:
    """The config a driver described in the protocol (`DriverEntry.section`) is described and built from:
    its section, completed from the space where the section is silent (`serial_instrument_config`; a
    manual instrument is shown the space's parameters, in their units, and refuses a value <= 0 for the
    measured values in `positive`, those modelled on a log scale)."""
    if isinstance(section, SerialInstrumentConfig):
        return serial_instrument_config(section, space)
    if isinstance(section, ManualInstrumentConfig):
        return section.accepting(_space_envelope(space), positive)
    return section


def _space_envelope(space: Mapping[str, Any]) -> SafetyEnvelope:
    """Every parameter of the space, without bounds (the space has them), in its unit; a label parameter
    accepts its listed values."""
    limits = {}
    for name, spec in space.items():
        labels = _labels(spec)
        limits[name] = Limit(allowed=labels) if labels is not None else Limit(unit=str(getattr(spec, "unit", "") or ""))
    return SafetyEnvelope(limits)


def serial_instrument_config(section: InstrumentSection, space: Mapping[str, Any]) -> SerialInstrumentConfig:
    """The protocol's serial section, completed from the space: the one config both the description
    (validate, the safety gate, unit conversion) and the driver that runs the campaign are built from.

    Where the section is silent the space speaks: a label parameter (choice, or fixed text) without an
    envelope entry accepts exactly its listed values, and a numeric parameter whose unit neither the
    envelope nor the set command states is sent in the space's unit. The protocol author chose not to
    limit such a parameter, so it has no bounds.
    """
    if not isinstance(section, SerialInstrumentConfig):
        raise TypeError(f"driver {section.driver!r} is not a serial instrument")
    limits = dict(section.envelope.limits)
    for name in section.set:
        spec = space.get(name)
        labels = _labels(spec)
        if labels is not None and name not in limits:
            limits[name] = EnvelopeLimit(allowed=list(labels))
        elif labels is None and not section.parameter_unit(name) and (unit := str(getattr(spec, "unit", "") or "")):
            limits[name] = limits.get(name, EnvelopeLimit()).model_copy(update={"unit": unit})
    envelope = EnvelopeSection.model_validate(
        {"min_interval": section.envelope.min_interval, "unchecked": section.envelope.unchecked, **limits})
    return section.model_copy(update={"envelope": envelope})


def to_instrument_units(
    limits: Mapping[str, Limit], space: Mapping[str, Any], conditions: Mapping[str, Value]
) -> Conditions:
    """Each numeric condition converted from the protocol's unit to the unit the envelope declares
    (K -> degC with offsets handled); labels, and values whose units already agree, pass unchanged."""
    sent: Conditions = {}
    for name, value in conditions.items():
        unit = getattr(space.get(name), "unit", None)
        limit = limits.get(name)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and unit is not None and limit is not None and limit.allowed is None and limit.unit != unit:
            value = convert(float(value), unit, limit.unit)
        sent[name] = value
    return sent


def _labels(spec: Any) -> tuple[str, ...] | None:
    """The values a label parameter takes, or None for a numeric one (or a name not in the space)."""
    if isinstance(spec, ChoiceSpec):
        return tuple(spec.values)
    if isinstance(spec, FixedSpec) and isinstance(spec.value, str):
        return (spec.value,)
    return None


def _pool_description(
    driver: str,
    space: Mapping[str, Any],
    objectives: Mapping[str, ObjectiveSpec],
    candidates: Callable[[], pd.DataFrame | None],
) -> DriverDescription:
    """Accepts the space's parameters at the values of the table; measures the objective columns it has."""
    table = candidates()
    if table is None:
        raise InstrumentDescriptionError(
            ("instrument", "driver"),
            f"{driver} reveals rows of a candidate table: add candidates: {{path: FILE.csv}}",
        )
    limits: dict[str, Limit] = {}
    for name, spec in space.items():
        values = getattr(spec, "values", None)
        limits[name] = Limit(allowed=tuple(values)) if values is not None else Limit(unit=getattr(spec, "unit", ""))
        if name in table.columns and limits[name].allowed is not None:
            limits[name] = Limit(allowed=tuple(str(v) for v in table[name].dropna().unique()))
    measures = {name: spec.unit for name, spec in objectives.items() if name in table.columns}
    return DriverDescription(driver, SafetyEnvelope(limits), measures)


__all__ = [
    "ENGINE_OPTIONS",
    "SIM",
    "InstrumentDescriptionError",
    "StationOptions",
    "described_by_protocol",
    "describe_instrument",
    "driver_options",
    "emulator_problem",
    "instrument_location",
    "option_problems",
    "run_by_hand",
    "section_config",
    "serial_instrument_config",
    "split_options",
    "station_options",
    "to_instrument_units",
]
