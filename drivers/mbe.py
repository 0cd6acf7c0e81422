"""MBE system (oxide growth, e.g. SrRuO3): effusion cells, substrate heater, ozone, shutters.
This module declares the hard limits the driver enforces and the options it takes, and registers the
driver (drivers/mbe_driver.py runs the growth). Limits follow working labs' practice (see
shared/DOMAIN.md, MBE): per-cell maximum temperature and ramp rate, substrate maximum, oxidant flow range."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator

from closedloop.drivers.base import (
    DriverDescription,
    EnvelopeViolation,
    Limit,
    SafetyEnvelope,
)
from closedloop.drivers.modbus_url import ModbusLink, parse_modbus_url
from closedloop.drivers.options import DriverOptions, Duration, Strict

MBE_ENVELOPE = SafetyEnvelope(
    {
        "sr_cell_temp": Limit(min=20.0, max=650.0, unit="degC", max_rate=20.0),
        "ru_cell_temp": Limit(min=20.0, max=2000.0, unit="degC", max_rate=10.0),
        "substrate_temp": Limit(min=20.0, max=900.0, unit="degC", max_rate=30.0),
        "ozone_flow": Limit(min=0.0, max=20.0, unit="sccm"),
        "growth_time": Limit(min=1.0, max=240.0, unit="min"),
    }
)

MBE_DESCRIPTION = DriverDescription(
    name="mbe",
    envelope=MBE_ENVELOPE,
    measures={"rrr": "", "xrd_fwhm": "deg", "growth_rate": "angstrom/s"},
    optional_settings=("growth_time",),
)

# Heater parameter -> the growth controller's device name.
HEATERS: dict[str, str] = {"sr_cell_temp": "SR_CELL", "ru_cell_temp": "RU_CELL", "substrate_temp": "SUBSTRATE"}


def check_ramp_rate(heater: str, rate: float) -> None:
    limit = MBE_ENVELOPE.limits[heater].max_rate or math.inf
    if not (math.isfinite(rate) and 0 < rate <= limit):
        raise EnvelopeViolation(f"{heater} ramp rate", rate, f"must be > 0 and at most max_rate {limit} degC/min")


def _default_ramp_rates() -> dict[str, float]:
    return {h: float(MBE_ENVELOPE.limits[h].max_rate or 1.0) for h in HEATERS}


class ModbusCell(Strict):
    """A heater whose loop is its own Eurotherm-class controller on Modbus (drivers/modbus_controller.py):
    `modbus` its URL (modbus+tcp://HOST:PORT?unit=N, modbus+rtu:///dev/ttyUSB0?unit=N&baudrate=9600),
    `encoding` scaled 16-bit integers with `decimals` decimals or IEEE floats, as the controller is set up."""

    modbus: str
    encoding: Literal["scaled", "float32"] = "scaled"
    decimals: int = Field(1, ge=0, le=4)
    timeout_s: Duration = Field(1.0, gt=0)

    @field_validator("modbus")
    @classmethod
    def _a_modbus_url(cls, url: str) -> str:
        parse_modbus_url(url)  # its ValueError says what to write
        return url


class MbeOptions(DriverOptions):
    """How the driver runs a growth; every field can be given in the protocol's `instrument.options`.

    `ramp_rate`: degC/min per heater (default: the envelope's max_rate; give some heaters, the others keep
    theirs); `activation_ev`: each cell's Arrhenius activation energy, the slope flux tuning steps along;
    `heat_gas_limit_torr`: highest chamber pressure at which heating or opening gas is allowed; `cells`:
    heaters set through their own Modbus controllers instead of the growth controller's line (heater ->
    `ModbusCell`). Times are durations ("15 s", "6 h") or seconds.
    """

    ramp_rate: dict[str, float] = Field(default_factory=_default_ramp_rates)
    idle: dict[str, float] = Field(
        default_factory=lambda: {"sr_cell_temp": 300.0, "ru_cell_temp": 1200.0, "substrate_temp": 200.0}
    )
    activation_ev: dict[str, float] = Field(default_factory=lambda: {"sr": 1.7, "ru": 6.0})
    stable_within_k: float = Field(1.0, gt=0)
    poll_s: Duration = Field(15.0, gt=0)
    stabilize_timeout_s: Duration = Field(6 * 3600.0, gt=0)
    soak_s: Duration = Field(300.0, ge=0)
    gauge_settle_s: Duration = Field(60.0, ge=0)
    gauge_readings: int = Field(16, ge=1)
    ozone_settle_s: Duration = Field(120.0, ge=0)
    heat_gas_limit_torr: float = Field(5e-7, gt=0)
    rheed_s: Duration = Field(600.0, gt=0)
    ex_situ_s: Duration = Field(3 * 3600.0, ge=0)
    timeout_s: Duration = Field(2.0, gt=0)
    cells: dict[str, ModbusCell] = Field(default_factory=dict)

    @field_validator("ramp_rate", mode="before")
    @classmethod
    def _merge_with_defaults(cls, value: Any) -> Any:
        return {**_default_ramp_rates(), **value} if isinstance(value, dict) else value

    @field_validator("ramp_rate")
    @classmethod
    def _rates_inside_the_envelope(cls, rates: dict[str, float]) -> dict[str, float]:
        for heater, rate in rates.items():
            if heater not in HEATERS:
                raise ValueError(f"unknown heater {heater!r}; heaters: {', '.join(HEATERS)}")
            try:
                check_ramp_rate(heater, float(rate))
            except EnvelopeViolation as e:
                raise ValueError(f"{e}; give at most the envelope's max_rate") from None
        return rates

    @field_validator("idle")
    @classmethod
    def _idle_heaters(cls, idle: dict[str, float]) -> dict[str, float]:
        _only_heaters(idle)
        for heater, value in idle.items():
            MBE_ENVELOPE.limits[heater].check(heater, value)
        return idle

    @field_validator("cells")
    @classmethod
    def _cells_are_heaters(cls, cells: dict[str, ModbusCell]) -> dict[str, ModbusCell]:
        _only_heaters(cells)
        # Two heaters on one controller would set each other's setpoint live; a simulation in process,
        # which gives each heater its own loop, could not show it.
        seen: dict[ModbusLink, str] = {}
        for heater, cell in cells.items():
            link = replace(parse_modbus_url(cell.modbus), baudrate=0, parity="", stopbits=0)  # where, not how
            if link in seen:
                raise ValueError(f"{seen[link]} and {heater} name the same controller ({cell.modbus}); give each "
                                 "heater its own controller (its own unit id)")
            seen[link] = heater
        return cells


def _only_heaters(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(HEATERS))
    if unknown:
        raise ValueError(f"unknown heater(s) {unknown}; heaters: {', '.join(HEATERS)}")
