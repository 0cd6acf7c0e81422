"""A tube furnace with a four-point-probe station, speaking SCPI over a line protocol.

The film's sheet resistance after an anneal depends on the setpoint temperature, the dwell time and the
forming-gas flow. Assumed model (smooth, so an optimizer has a well-defined target; not a measurement):
log R is a positive-definite quadratic in (temperature, log dwell, log flow) around a known optimum,
with a coupling term for the thermal-budget trade-off (hotter wants shorter), and 2.5 % multiplicative
noise per probe reading, seeded.

  log(R / R_MIN) = a*u^2 + b*v^2 + c*w^2 + d*u*v,
  u = (T - 350 degC) / 80 degC,  v = ln(t / 30 min),  w = ln(f / 50 sccm) / 0.8

Too little forming gas leaves the film oxidized, too much cools and dilutes it: hence a flow optimum.

Commands: *IDN?  *CLS  *RST  SYST:REM  SYST:LOC  CONF:RES  SOUR:TEMP <degC>  SOUR:DWEL <s>  SOUR:FLOW <sccm>  (and the same
with ? to read back)  INIT  ABOR  STAT:OPER? (RUNNING|IDLE)  MEAS:TEMP? (furnace temperature)
FETC:RES? (ohm/sq, mean of the probe readings)  FETC:RES:LIST? (the readings, comma-separated)
FETC:RES:SUMM? ("RS=<ohm>;T=<degC>")  TRAC:DATA? (the readings as an IEEE-488.2 block of <f4)
SYST:ERR? (`0,"No error"` or the oldest queued error).
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from dataclasses import dataclass

from closedloop.drivers.base import Clock

IDN = "KILNCO,TF-1200,SN001,1.0"
OPTIMUM = {"anneal_temp": 350.0, "anneal_time": 30.0, "gas_flow": 50.0}  # degC, min, sccm
R_MIN = 42.0  # ohm/sq at the optimum, before noise
NOISE_SD = 0.025
AMBIENT_C = 25.0
RAMP_C_PER_MIN = 20.0
PROBE_READINGS = 8
MAX_TEMP_C = 1200.0
MAX_FLOW_SCCM = 500.0
MAX_DWELL_S = 48 * 3600.0
# Shape of the optimum (see the module docstring); d^2 < 4ab keeps it a single minimum.
_A, _B, _C, _D = 1.0, 0.35, 0.4, 0.5


def sheet_resistance(anneal_temp: float, anneal_time: float, gas_flow: float) -> float:
    """Noise-free sheet resistance (ohm/sq) after annealing at `anneal_temp` degC for `anneal_time` min."""
    u = (anneal_temp - OPTIMUM["anneal_temp"]) / 80.0
    v = math.log(max(anneal_time, 0.1) / OPTIMUM["anneal_time"])
    w = math.log(max(gas_flow, 1.0) / OPTIMUM["gas_flow"]) / 0.8
    return R_MIN * math.exp(_A * u * u + _B * v * v + _C * w * w + _D * u * v)


@dataclass
class _Setpoints:
    temp_c: float = AMBIENT_C
    dwell_s: float = 0.0
    flow_sccm: float = 0.0


@dataclass(frozen=True)
class _Anneal:
    start: float
    end: float
    setpoints: _Setpoints


class FurnaceModel:
    """The furnace behind `handle(line)`; time comes from `clock` (scaled wall time or a trial's clock)."""

    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.clock = clock
        self._rng = random.Random(seed)
        self.reset(power_on=True)

    def reset(self, power_on: bool = False) -> None:
        """Power cycle: setpoints back to defaults, any anneal aborted, the sample's result lost."""
        self.setpoints = _Setpoints()
        self._anneal: _Anneal | None = None
        self._readings: list[float] | None = None
        self._errors: deque[str] = deque(maxlen=16)
        if not power_on:
            self._errors.append('-315,"Configuration memory lost"')

    # -- state -----------------------------------------------------------------------------------

    def _running(self) -> bool:
        return self._anneal is not None and self.clock.now() < self._anneal.end

    def _finish_if_done(self) -> None:
        if self._anneal is not None and not self._running():
            sp = self._anneal.setpoints
            mean = sheet_resistance(sp.temp_c, sp.dwell_s / 60.0, sp.flow_sccm)
            self._readings = [mean * math.exp(self._rng.gauss(0.0, NOISE_SD)) for _ in range(PROBE_READINGS)]
            self._anneal = None

    def furnace_temp(self) -> float:
        """Ramp at RAMP_C_PER_MIN to the setpoint, hold for the dwell, then cool back to ambient."""
        if self._anneal is None or not self._running():
            return AMBIENT_C
        elapsed_min = (self.clock.now() - self._anneal.start) / 60.0
        target = self._anneal.setpoints.temp_c
        return min(target, AMBIENT_C + RAMP_C_PER_MIN * elapsed_min) if target >= AMBIENT_C else target

    # -- the command set -------------------------------------------------------------------------

    def handle(self, line: str) -> str | bytes | None:
        """The reply to one command line, or None for commands without a reply."""
        self._finish_if_done()
        text = line.strip()
        header, _, argument = text.partition(" ")
        header = header.upper()
        if not header:
            return None
        query = _QUERIES.get(header)
        if query is not None:
            return query(self)
        setter = _SETTERS.get(header)
        if setter is not None:
            return setter(self, argument.strip())
        action = _ACTIONS.get(header)
        if action is not None:
            action(self)
            return None
        # SCPI: an unknown command gets no reply, only an entry in the error queue.
        self._errors.append(f'-113,"Undefined header;{text}"')
        return None

    def _set(self, field: str, argument: str, low: float, high: float) -> None:
        try:
            value = float(argument)
        except ValueError:
            self._errors.append('-104,"Data type error"')
            return None
        if not (low <= value <= high) or not math.isfinite(value):
            self._errors.append('-222,"Data out of range"')
            return None
        setattr(self.setpoints, field, value)
        return None

    def _init(self) -> None:
        if self._running():
            self._errors.append('-213,"Init ignored"')
            return
        sp = _Setpoints(**vars(self.setpoints))
        ramp_s = abs(sp.temp_c - AMBIENT_C) / RAMP_C_PER_MIN * 60.0
        now = self.clock.now()
        self._anneal = _Anneal(start=now, end=now + ramp_s + sp.dwell_s, setpoints=sp)
        self._readings = None

    def _abort(self) -> None:
        self._anneal = None

    def _fetch(self) -> list[float] | None:
        if self._running() or self._readings is None:
            self._errors.append('-230,"Data corrupt or stale"')
            return None
        return self._readings

    def _fetch_mean(self) -> str:
        readings = self._fetch()
        return "9.91E+37" if readings is None else f"{sum(readings) / len(readings):.6E}"

    def _fetch_list(self) -> str:
        readings = self._fetch()
        return "9.91E+37" if readings is None else ",".join(f"{r:.6E}" for r in readings)

    def _fetch_summary(self) -> str:
        readings = self._fetch()
        mean = 9.91e37 if readings is None else sum(readings) / len(readings)
        return f"RS={mean:.6E};T={self.furnace_temp():.1f}"

    def _trace(self) -> bytes:
        readings = self._fetch() or []
        payload = struct.pack(f"<{len(readings)}f", *readings)
        length = str(len(payload))
        return f"#{len(length)}{length}".encode("ascii") + payload

    def _error(self) -> str:
        return self._errors.popleft() if self._errors else '0,"No error"'


_QUERIES = {
    "*IDN?": lambda m: IDN,
    "*OPC?": lambda m: "1",
    "STAT:OPER?": lambda m: "RUNNING" if m._running() else "IDLE",
    "SOUR:TEMP?": lambda m: f"{m.setpoints.temp_c:.1f}",
    "SOUR:DWEL?": lambda m: f"{m.setpoints.dwell_s:.0f}",
    "SOUR:FLOW?": lambda m: f"{m.setpoints.flow_sccm:.2f}",
    "MEAS:TEMP?": lambda m: f"{m.furnace_temp():.1f}",
    "FETC:RES?": FurnaceModel._fetch_mean,
    "FETC:RES:LIST?": FurnaceModel._fetch_list,
    "FETC:RES:SUMM?": FurnaceModel._fetch_summary,
    "TRAC:DATA?": FurnaceModel._trace,
    "SYST:ERR?": FurnaceModel._error,
}
_SETTERS = {
    "SOUR:TEMP": lambda m, a: m._set("temp_c", a, -50.0, MAX_TEMP_C),
    "SOUR:DWEL": lambda m, a: m._set("dwell_s", a, 0.0, MAX_DWELL_S),
    "SOUR:FLOW": lambda m, a: m._set("flow_sccm", a, 0.0, MAX_FLOW_SCCM),
}
_ACTIONS = {
    "*CLS": lambda m: m._errors.clear(),
    "*RST": lambda m: m.reset(power_on=True),
    "CONF:RES": lambda m: None,
    "SYST:REM": lambda m: None,  # remote mode: RS-232 instruments want it before taking setpoints
    "SYST:LOC": lambda m: None,
    "INIT": FurnaceModel._init,
    "ABOR": FurnaceModel._abort,
}
