"""The MBE chamber behind a line protocol, as its growth controller would expose it: one Eurotherm-style
loop per heater, shutters, the beam-flux monitor, ozone, the pressure gauge and interlock, RHEED and the
ex-situ results of the last growth.

Commands (CTRL is SR_CELL, RU_CELL or SUBSTRATE; numbers in degC, degC/min, sccm, Torr, seconds):
  CTRL:SP <v>  CTRL:SP?  CTRL:PV?  CTRL:OP?  CTRL:RATE <v>  CTRL:RATE?
  SHUT:<SR|RU|MAIN> OPEN|CLOS  SHUT:<x>?  BFM IN|OUT  BFM:READ?  OZONE:FLOW <v>  OZONE:FLOW?
  PRES?  ILCK? (OK|TRIPPED)  RHEED:CAPT <s>  RHEED:DATA? (IEEE-488.2 block of <f4 intensities)
  RHEED:DATA:CSV?  RHEED:RATE? (samples/s)  GROW:MEAS? ("RRR=..;FWHM=..;RATE=..;PHASE=..")  *IDN?  SYST:ERR?

The emulator refuses nothing a real controller would take: whatever setpoint, rate or shutter state
arrives is applied and written to `record` with its time, so a test sees exactly what a driver sent.
Safety is the driver's job. A setpoint ramps at the loop's current RATE, as on a Eurotherm.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from closedloop.drivers.base import Clock
from closedloop.simulators.mbe.chamber import (
    LAG_S,
    READING_NOISE_K,
    Chamber,
    growth_from,
    thickness_averaged,
)
from closedloop.simulators.mbe.growth import MeasurementScatter, RheedSettings, SrRuO3Window, measure

IDN = "EPICO,OXMBE-3,SN7,2.1"
CONTROLLERS: dict[str, str] = {"SR_CELL": "sr_cell_temp", "RU_CELL": "ru_cell_temp", "SUBSTRATE": "substrate_temp"}
SHUTTERS = ("SR", "RU", "MAIN")
DEFAULT_RATE_PER_MIN = 5.0  # what a loop ramps at before anyone sets RATE (a conservative factory value)
OVERRANGE = "9.91E+37"
_OUTPUT_PER_KELVIN = 2.0  # proportional band of the simulated loop, % output per kelvin of error


@dataclass(frozen=True)
class WireRecord:
    """One state-changing command as the emulator took it: `device` e.g. "SR_CELL", "SHUT:RU", "OZONE",
    "BFM"; `field` "SP", "RATE", "STATE" or "FLOW"; `value` a number or "OPEN"/"CLOS"/"IN"/"OUT"."""

    t_s: float
    device: str
    field: str
    value: float | str


class MbeWireModel:
    """`handle(line)` for the emulator framework (`simulators.emulator.MODELS["mbe"]`)."""

    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.clock = clock
        # Also told of each record as it is made (`closedloop emulate mbe --record FILE`); kept across resets.
        self.on_record: Callable[[WireRecord], None] | None = None
        self.rng = np.random.default_rng([seed, 0x3BE])
        self.window = SrRuO3Window()
        self.rheed_settings = RheedSettings()
        self.reset(power_on=True)

    def reset(self, power_on: bool = False) -> None:
        """Power cycle of the controller rack: loops keep their temperature, everything else starts over."""
        # No rate limits inside: the emulator must show a driver's mistakes, not prevent them.
        self.chamber = Chamber({name: math.inf for name in LAG_S})
        self.rates = {ctrl: DEFAULT_RATE_PER_MIN for ctrl in CONTROLLERS}
        self.main_open = False
        self.record: list[WireRecord] = []
        self._errors: deque[str] = deque(maxlen=16)
        self._seen_t = self.clock.now()
        self._rheed: tuple[float, np.ndarray] | None = None  # (capture end, intensities)
        self._growth_started: float | None = None
        self._growth_s = 0.0
        self._growth_film_inputs: dict[str, float] | None = None
        self._last_film: dict[str, float | str] | None = None
        if not power_on:
            self._errors.append('-315,"Configuration memory lost"')

    # -- time ------------------------------------------------------------------------------------

    def _catch_up(self) -> None:
        now = self.clock.now()
        self.chamber.advance(now - self._seen_t)
        self._seen_t = max(self._seen_t, now)

    def _note(self, device: str, field: str, value: float | str) -> None:
        entry = WireRecord(self._seen_t, device, field, value)
        self.record.append(entry)
        if self.on_record is not None:
            self.on_record(entry)

    # -- the command set -------------------------------------------------------------------------

    def handle(self, line: str) -> str | bytes | None:
        self._catch_up()
        header, _, argument = line.strip().partition(" ")
        header, argument = header.upper(), argument.strip()
        if header in ("*IDN?", "SYST:ERR?", "PRES?", "ILCK?", "BFM:READ?", "OZONE:FLOW?", "GROW:MEAS?"):
            return self._plain_query(header)
        if header.startswith("RHEED:"):
            return self._rheed_command(header, argument)
        device, _, field = header.partition(":")
        if device in CONTROLLERS and field:
            return self._controller(device, field, argument)
        if device == "SHUT" and field.rstrip("?") in SHUTTERS:
            return self._shutter(field, argument)
        if header == "BFM" and argument.upper() in ("IN", "OUT"):
            self._note("BFM", "STATE", argument.upper())
            self.chamber.move_gauge(argument.upper() == "IN")
            return None
        if header == "OZONE:FLOW":
            value = self._number(argument)
            if value is not None:
                self._note("OZONE", "FLOW", value)
                self.chamber.set_ozone(value)
            return None
        self._errors.append(f'-113,"Undefined header;{line.strip()}"')
        return None

    def _plain_query(self, header: str) -> str:
        chamber = self.chamber
        if header == "*IDN?":
            return IDN
        if header == "SYST:ERR?":
            return self._errors.popleft() if self._errors else '0,"No error"'
        if header == "PRES?":
            return f"{chamber.pressure():.3E}"
        if header == "ILCK?":
            return "TRIPPED" if chamber.pressure() > chamber.interlock.max_process_torr else "OK"
        if header == "OZONE:FLOW?":
            return f"{chamber.ozone_sccm:.3f}"
        if header == "BFM:READ?":
            if not chamber.gauge.inserted:
                self._errors.append('-221,"Settings conflict;flux monitor retracted"')
                return OVERRANGE
            beam = sum(chamber.beam_bep(s.lower()) for s in ("SR", "RU") if chamber.shutters[s.lower()].is_open)
            return f"{chamber.gauge.read(self.rng, beam, chamber.pressure()):.4E}"
        return self._ex_situ()

    def _number(self, argument: str) -> float | None:
        try:
            value = float(argument)
        except ValueError:
            self._errors.append(f'-104,"Data type error;{argument!r}"')
            return None
        if not math.isfinite(value):
            self._errors.append('-222,"Data out of range"')
            return None
        return value

    def _controller(self, ctrl: str, field: str, argument: str) -> str | None:
        name = CONTROLLERS[ctrl]
        loop = self.chamber.controllers[name]
        if field == "SP?":
            return f"{loop.target:.2f}"
        if field == "PV?":
            return f"{loop.process_value + READING_NOISE_K * float(self.rng.standard_normal()):.2f}"
        if field == "RATE?":
            return f"{self.rates[ctrl]:.3f}"
        if field == "OP?":
            # Holding power grows with temperature; the proportional term answers the ramp's lag.
            holding = 100.0 * max(0.0, loop.process_value - 20.0) / 2100.0
            output = holding + _OUTPUT_PER_KELVIN * (loop.working_setpoint - loop.process_value)
            return f"{min(100.0, max(0.0, output)):.1f}"
        if field not in ("SP", "RATE"):
            self._errors.append(f'-113,"Undefined header;{ctrl}:{field}"')
            return None
        value = self._number(argument)
        if value is None:
            return None
        self._note(ctrl, field, value)
        if field == "RATE":
            if value <= 0:
                self._errors.append('-222,"Data out of range;rate must be > 0"')
                return None
            self.rates[ctrl] = value
            target = loop.target  # a new rate applies to the ramp in progress
        else:
            target = value
        self.chamber.ramp(name, target, self.rates[ctrl])
        return None

    def _shutter(self, field: str, argument: str) -> str | None:
        if field.endswith("?"):
            return "OPEN" if self._is_open(field.rstrip("?")) else "CLOS"
        state = argument.upper()
        if state not in ("OPEN", "CLOS"):
            self._errors.append(f'-224,"Illegal parameter value;{argument!r}, expected OPEN or CLOS"')
            return None
        self._note(f"SHUT:{field}", "STATE", state)
        was_growing = self._growing()
        if field == "MAIN":
            self.main_open = state == "OPEN"
        elif state == "OPEN":
            self.chamber.open_shutter(field.lower())
        else:
            self.chamber.close_shutter(field.lower())
        self._track_growth(was_growing)
        return None

    def _is_open(self, shutter: str) -> bool:
        return self.main_open if shutter == "MAIN" else self.chamber.shutters[shutter.lower()].is_open

    # -- growth, RHEED, ex-situ ------------------------------------------------------------------

    def _growing(self) -> bool:
        return all(self._is_open(s) for s in SHUTTERS)

    def _track_growth(self, was_growing: bool) -> None:
        """Film grows while every shutter is open; its conditions are those when growth (re)started."""
        now = self._seen_t
        if self._growing() and not was_growing:
            self._growth_started = now
            if self._growth_film_inputs is None:
                self._growth_film_inputs = {n: self.chamber.true_celsius(n) for n in LAG_S}
                self._growth_film_inputs["ozone"] = self.chamber.ozone_sccm
        elif was_growing and not self._growing() and self._growth_started is not None:
            self._growth_s += now - self._growth_started
            self._growth_started = None

    def _ex_situ(self) -> str:
        if self._growth_started is not None or self._growth_film_inputs is None or self._growth_s <= 0:
            if self._last_film is None:
                self._errors.append('-230,"Data stale;no finished growth to measure"')
                return "NONE"
        else:
            self._last_film = self._measure_film()
            self._growth_film_inputs, self._growth_s = None, 0.0
        assert self._last_film is not None
        return ";".join(f"{k}={v}" for k, v in self._last_film.items())

    def _measure_film(self) -> dict[str, float | str]:
        inputs = dict(self._growth_film_inputs or {})
        ozone = inputs.pop("ozone")
        film = thickness_averaged(growth_from(self.window, inputs, ozone), self._growth_s)
        values = measure(film, self.rng, MeasurementScatter())
        result: dict[str, float | str] = {
            "RRR": round(values.get("rrr", math.nan), 4),
            "FWHM": round(values.get("xrd_fwhm", math.nan), 5),
            "RATE": round(values["growth_rate"], 5),
            "PHASE": film.phase.replace(";", ","),
        }
        return result

    def _rheed_command(self, header: str, argument: str) -> str | bytes | None:
        if header == "RHEED:RATE?":
            return f"{self.rheed_settings.sample_hz:g}"
        if header == "RHEED:CAPT":
            seconds = self._number(argument)
            if seconds is None or seconds <= 0:
                return None
            settings = RheedSettings(record_s=seconds)
            _, _, intensity = self.chamber.film(seconds, self.window, settings, self.rng)
            if not self._growing():
                intensity = np.full_like(intensity, settings.background)  # no growth, no oscillations
            self._rheed = (self._seen_t + seconds, intensity)
            return None
        if header in ("RHEED:DATA?", "RHEED:DATA:CSV?"):
            if self._rheed is None or self._seen_t < self._rheed[0]:
                self._errors.append('-230,"Data stale;no finished RHEED capture"')
                data = np.zeros(0)
            else:
                data = self._rheed[1]
            if header == "RHEED:DATA:CSV?":
                return ",".join(f"{v:.5f}" for v in data)
            payload = struct.pack(f"<{len(data)}f", *data)
            length = str(len(payload))
            return f"#{len(length)}{length}".encode("ascii") + payload
        self._errors.append(f'-113,"Undefined header;{header}"')
        return None
