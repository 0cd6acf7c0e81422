"""Talking to instruments: transports (pyserial URLs), wire protocols, drivers with their safety
envelopes and options, the registry protocols name them by, and the analysis of raw data.

Never imports planners, simulators or the controller."""

from closedloop.drivers.base import (
    Driver,
    DriverDescription,
    DriverEntry,
    EnvelopeViolation,
    InstrumentContext,
    InstrumentFault,
    Limit,
    Measurement,
    SafetyEnvelope,
)
from closedloop.drivers.registry import DRIVERS, driver_entry

__all__ = [
    "DRIVERS",
    "Driver",
    "DriverDescription",
    "DriverEntry",
    "EnvelopeViolation",
    "InstrumentContext",
    "InstrumentFault",
    "Limit",
    "Measurement",
    "SafetyEnvelope",
    "driver_entry",
]
