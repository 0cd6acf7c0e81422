"""Talking to instruments: transports (pyserial URLs), wire protocols, drivers with their safety
envelopes and options, the registry protocols name them by, and the analysis of raw data.

Never imports planners, simulators or the controller."""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from closedloop.drivers.registry import DRIVERS, driver_entry


def __getattr__(name: str) -> Any:
    # The registry imports every driver and with them pint; `from closedloop.drivers.base import ...`
    # (the store, `closedloop status`) must not pay for that, so the registry loads on first use.
    if name in ("DRIVERS", "driver_entry"):
        from closedloop.drivers import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
