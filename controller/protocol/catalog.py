"""The instruments a protocol can name in `instrument.driver`: every registered driver
(`drivers.registry`) and every simulated instrument as `sim:NAME` (`simulators.registry`).

This is the one place the two registries are joined; nothing in the controller compares driver names.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from closedloop.drivers.base import DriverEntry
from closedloop.drivers.registry import DRIVERS
from closedloop.simulators.registry import EMULATORS, SIMULATED, SimulatedInstrument

SIM = "sim:"

Instrument = DriverEntry[Any] | SimulatedInstrument[Any]


def instrument_names() -> list[str]:
    return sorted({*DRIVERS, *(SIM + name for name in SIMULATED)})


def instrument(driver: str) -> Instrument:
    """The entry for `instrument.driver`; ValueError naming the known ones (and the closest) otherwise."""
    if driver in DRIVERS:
        return DRIVERS[driver]
    if driver.startswith(SIM) and driver.removeprefix(SIM) in SIMULATED:
        return SIMULATED[driver.removeprefix(SIM)]
    name = driver.removeprefix(SIM)
    if driver.startswith(SIM) and name in EMULATORS:
        speaker = EMULATORS[name].driver
        raise ValueError(f"the {name} emulator speaks the {speaker} driver's wire protocol: "
                         f"use driver: {speaker} with connection: sim://{name}")
    known = instrument_names()
    close = get_close_matches(driver, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(f"unknown driver {driver!r}; {hint}known drivers: {', '.join(known)}")


def check_driver_name(driver: str) -> None:
    """Raise ValueError naming the known drivers (and the closest one) unless `driver` is known."""
    instrument(driver)
