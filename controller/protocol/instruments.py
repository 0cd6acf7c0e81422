"""Which instrument a protocol names, and what that instrument accepts and measures.

`instrument.driver` is one of:
- "trmc", "mbe": the drivers' declared envelopes (drivers/trmc.py, drivers/mbe.py);
- "serial": a generic instrument described in the protocol itself, validated by the serial driver's own
  model (`drivers.serial_config`), which also says what it accepts and measures;
- "sim:<model>": a simulator model from `simulators.catalog`;
- "sim:lookup": a real-data pool: each trial reveals the objective columns of one candidate-table row.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

from closedloop.controller.protocol.sections import ChoiceSpec, FixedSpec
from closedloop.controller.protocol.yaml_source import FieldPath
from closedloop.drivers.base import DriverDescription, Limit, SafetyEnvelope
from closedloop.drivers.mbe import MBE_DESCRIPTION
from closedloop.drivers.serial_config import EnvelopeLimit, EnvelopeSection, SerialInstrumentConfig
from closedloop.drivers.trmc import TRMC_DESCRIPTION
from closedloop.simulators import catalog

if TYPE_CHECKING:
    from closedloop.controller.protocol.model import Protocol

LOOKUP = "sim:lookup"
_DECLARED = {"trmc": TRMC_DESCRIPTION, "mbe": MBE_DESCRIPTION}


class InstrumentDescriptionError(ValueError):
    """The protocol's instrument cannot be described; `path` is the protocol field to point at."""

    def __init__(self, path: FieldPath, message: str) -> None:
        super().__init__(message)
        self.path = path


def driver_names() -> list[str]:
    simulated = [f"sim:{model}" for model in catalog.MODELS if model not in catalog.SERIAL_MODELS]
    return sorted({*_DECLARED, "serial", *simulated, LOOKUP})


def check_driver_name(driver: str) -> None:
    """Raise ValueError naming the known drivers (and the closest one) unless `driver` is known."""
    known = driver_names()
    model = driver.removeprefix("sim:")
    if driver.startswith("sim:") and model in catalog.SERIAL_MODELS:
        raise ValueError(f"the {model} emulator speaks SCPI: use driver: serial with connection: sim://{model}")
    if driver not in known:
        close = get_close_matches(driver, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown driver {driver!r}; {hint}known drivers: {', '.join(known)}")


def emulated_model(connection: str | None) -> str | None:
    """The simulator model a `sim://MODEL` connection names, or None for a real port."""
    if connection is None or not connection.startswith("sim://"):
        return None
    return connection.removeprefix("sim://").strip("/")


def describe_instrument(protocol: Protocol) -> DriverDescription:
    """The envelope and measured quantities of the protocol's instrument.

    For a lookup pool this reads the candidate table: `InstrumentDescriptionError` when the protocol has
    none, `ProtocolError` (located at candidates.path) when it cannot be read.
    """
    driver = protocol.instrument.driver
    if driver in _DECLARED:
        return _DECLARED[driver]
    if driver == "serial":
        return _serial_description(protocol)
    if driver == LOOKUP:
        return _lookup_description(protocol)
    return catalog.describe(driver.removeprefix("sim:"))


def _serial_description(protocol: Protocol) -> DriverDescription:
    return serial_instrument_config(protocol).describe()


def serial_instrument_config(protocol: Protocol) -> SerialInstrumentConfig:
    """The protocol's serial section, completed from the space: the one config both the description
    (validate, the safety gate, unit conversion) and the driver that runs the campaign are built from.

    Where the section is silent the space speaks: a label parameter (choice, or fixed text) without an
    envelope entry accepts exactly its listed values, and a numeric parameter whose unit neither the
    envelope nor the set command states is sent in the space's unit. The protocol author chose not to
    limit such a parameter, so it has no bounds.
    """
    config = protocol.instrument
    if not isinstance(config, SerialInstrumentConfig):
        raise TypeError(f"driver {config.driver!r} is not a serial instrument")
    limits = config.envelope.limits
    for name in config.set:
        spec = protocol.space.get(name)
        labels = _labels(spec)
        if labels is not None and name not in limits:
            limits[name] = EnvelopeLimit(allowed=list(labels))
        elif labels is None and not config.parameter_unit(name) and getattr(spec, "unit", ""):
            limits[name] = limits.get(name, EnvelopeLimit()).model_copy(update={"unit": spec.unit})
    envelope = EnvelopeSection(min_interval=config.envelope.min_interval, **limits)
    return config.model_copy(update={"envelope": envelope})


def _labels(spec: Any) -> tuple[str, ...] | None:
    """The values a label parameter takes, or None for a numeric one (or a name not in the space)."""
    if isinstance(spec, ChoiceSpec):
        return tuple(spec.values)
    if isinstance(spec, FixedSpec) and isinstance(spec.value, str):
        return (spec.value,)
    return None


def _lookup_description(protocol: Protocol) -> DriverDescription:
    """Accepts the space's parameters at the values of the table; measures the objective columns it has."""
    if protocol.candidates is None:
        raise InstrumentDescriptionError(
            ("instrument", "driver"), "sim:lookup reveals rows of a candidate table: add candidates: {path: FILE.csv}"
        )
    table = protocol.candidates_frame()
    assert table is not None
    limits: dict[str, Limit] = {}
    for name in protocol.space:
        limits[name] = _unlimited(protocol, name)
        if name in table.columns and limits[name].allowed is not None:
            limits[name] = Limit(allowed=tuple(str(v) for v in table[name].dropna().unique()))
    measures = {name: spec.unit for name, spec in protocol.objectives.items() if name in table.columns}
    return DriverDescription(LOOKUP, SafetyEnvelope(limits), measures)


def _unlimited(protocol: Protocol, name: str) -> Limit:
    """A limit with no bounds, in the parameter's own unit; categorical parameters list their values."""
    spec = protocol.space[name]
    values = getattr(spec, "values", None)
    if values is not None:
        return Limit(allowed=tuple(values))
    return Limit(unit=getattr(spec, "unit", ""))
