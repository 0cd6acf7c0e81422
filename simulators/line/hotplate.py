"""A hot plate of the OPV line, speaking a small SCPI-like command set; served as model "hotplate" and
driven by `driver: serial` from YAML. A line may have several (one emulator instance each, e.g.
sim://hotplate?seed=1 and sim://hotplate?seed=2); all record their anneals in the line's `FilmLedger`.

Commands (setters have no reply; errors go to the queue read by SYST:ERR?; `A;B` sends A then B):
  *IDN?  *CLS  *RST  SYST:ERR?
  SOUR:TEMP <degC 20-300>  SOUR:TIME <min 0-60>  SAMP:ID <n> (the sample on the plate)  (and SOUR:*? to read back)
  INIT: ramp at 15 degC/min from 25 degC, dwell SOUR:TIME, then the film is taken off; needs a SAMP:ID
  (each anneal is recorded for its sample, which is then cleared)
  ABOR  STAT:OPER? (RAMP|DWELL|IDLE)  MEAS:TEMP? (plate temperature now)
  FETC:TEMP? (mean plate temperature over the last dwell, thermocouple: +-0.3 degC)

The protocol's instrument section for one anneal step (`{sample}` is the trial id, see drivers.serial_driver):

    instrument:
      driver: serial
      connection: sim://hotplate                 # or the pty `closedloop emulate hotplate --pty` prints
      serial: {baudrate: 9600, terminator: "\\n", timeout: 2 s}
      identify: {query: "*IDN?", expect: "THERMOLAB,HP-300"}
      setup: ["*CLS", "ABOR"]
      set:
        anneal_temp: "SOUR:TEMP {value:.1f}"
        anneal_time: "SOUR:TIME {value:.2f}"
      start: ["SAMP:ID {sample}", "INIT"]
      wait: {query: "STAT:OPER?", until: "^IDLE", poll: 15 s, timeout: 2 h}
      measure:
        plate_temp: {query: "FETC:TEMP?", unit: degC}
      error_query: "SYST:ERR?"
      safe_state: ["ABOR", "SOUR:TEMP 25"]
      envelope:
        anneal_temp: {min: 20, max: 250, unit: degC}
        anneal_time: {min: 0, max: 60, unit: min}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from closedloop.drivers.base import Clock
from closedloop.simulators.line.ledger import ROOM_TEMP_C, Anneal, FilmLedger, shared_ledger

IDN = "THERMOLAB,HP-300,SN0007,1.4"
RAMP_C_PER_MIN = 15.0
MAX_TEMP_C = 300.0
MAX_TIME_MIN = 60.0
THERMOCOUPLE_SD = 0.3


@dataclass(frozen=True)
class _Run:
    sample: int
    temp_c: float
    start: float
    dwell_start: float
    end: float


def anneal_seconds(temp_c: float, time_min: float) -> float:
    """How long an anneal occupies the plate: the ramp from room temperature, then the dwell."""
    return max(0.0, temp_c - ROOM_TEMP_C) / RAMP_C_PER_MIN * 60.0 + 60.0 * time_min


class HotplateModel:
    """The hot plate behind `handle(line)`; time from `clock`, anneals recorded in `ledger`."""

    def __init__(self, clock: Clock, seed: int = 0, ledger: FilmLedger | None = None) -> None:
        self.clock = clock
        self.ledger = ledger if ledger is not None else shared_ledger()
        self._rng = np.random.default_rng(seed)
        self.reset(power_on=True)

    def reset(self, power_on: bool = False) -> None:
        """Power cycle: setpoints back to defaults, a running anneal stopped, the last reading lost."""
        self.temp_c = ROOM_TEMP_C
        self.time_min = 0.0
        self.sample: int | None = None
        self._run: _Run | None = None
        self._dwell_reading: float | None = None
        self._errors: deque[str] = deque(maxlen=16)
        if not power_on:
            self._errors.append('-315,"Configuration memory lost"')

    def handle(self, line: str) -> str | None:
        if ";" in line:  # SCPI compound command: each part in turn, the replies joined
            replies = [r for r in (self.handle(part) for part in line.split(";")) if r is not None]
            return ";".join(replies) if replies else None
        text = line.strip()
        header, _, argument = text.partition(" ")
        header, argument = header.upper(), argument.strip()
        if header in _QUERIES:
            return _QUERIES[header](self)
        if header in _SETTERS:
            _SETTERS[header](self, argument)
        elif header in _ACTIONS:
            _ACTIONS[header](self)
        elif header:
            self._errors.append(f'-113,"Undefined header;{text}"')
        return None

    def _running(self) -> bool:
        return self._run is not None and self.clock.now() < self._run.end

    def _status(self) -> str:
        if not self._running():
            return "IDLE"
        assert self._run is not None
        return "RAMP" if self.clock.now() < self._run.dwell_start else "DWELL"

    def plate_temp(self) -> float:
        if not self._running():
            return ROOM_TEMP_C
        assert self._run is not None
        ramped = ROOM_TEMP_C + RAMP_C_PER_MIN * (self.clock.now() - self._run.start) / 60.0
        return min(self._run.temp_c, ramped)

    def _number(self, argument: str, low: float, high: float) -> float | None:
        try:
            value = float(argument)
        except ValueError:
            self._errors.append('-104,"Data type error"')
            return None
        if not (math.isfinite(value) and low <= value <= high):
            self._errors.append('-222,"Data out of range"')
            return None
        return value

    def _set_temp(self, argument: str) -> None:
        value = self._number(argument, 20.0, MAX_TEMP_C)
        if value is not None:
            self.temp_c = value

    def _set_time(self, argument: str) -> None:
        value = self._number(argument, 0.0, MAX_TIME_MIN)
        if value is not None:
            self.time_min = value

    def _set_sample(self, argument: str) -> None:
        value = self._number(argument, 0, 2**31 - 1)
        if value is not None and value.is_integer():
            self.sample = int(value)
        elif value is not None:
            self._errors.append('-104,"Data type error"')

    def _init(self) -> None:
        if self._running():
            self._errors.append('-213,"Init ignored: anneal in progress"')
            return
        if self.sample is None:
            self._errors.append('-221,"Settings conflict;no sample on the plate (SAMP:ID)"')
            return
        now = self.clock.now()
        ramp_s = anneal_seconds(self.temp_c, 0.0)
        self._run = _Run(self.sample, self.temp_c, now, now + ramp_s, now + ramp_s + 60.0 * self.time_min)
        self.ledger.record_anneal(self.sample, Anneal(self.temp_c, self.time_min))
        self._dwell_reading = self.temp_c + THERMOCOUPLE_SD * float(self._rng.standard_normal())
        self.sample = None

    def _abort(self) -> None:
        """Stop heating; a film taken off mid-anneal got the part of the dwell it had."""
        run, now = self._run, self.clock.now()
        if run is not None and self._running():
            dwelled_min = max(0.0, now - run.dwell_start) / 60.0
            self.ledger.record_anneal(run.sample, Anneal(self.plate_temp(), dwelled_min))
        self._run = None

    def _fetch_temp(self) -> str:
        if self._running() or self._dwell_reading is None:
            self._errors.append('-230,"Data corrupt or stale"')
            return "9.91E+37"
        return f"{self._dwell_reading:.2f}"

    def _pop_error(self) -> str:
        return self._errors.popleft() if self._errors else '0,"No error"'


_QUERIES: dict[str, Callable[[HotplateModel], str]] = {
    "*IDN?": lambda m: IDN,
    "*OPC?": lambda m: "0" if m._running() else "1",
    "SYST:ERR?": HotplateModel._pop_error,
    "SOUR:TEMP?": lambda m: f"{m.temp_c:.1f}",
    "SOUR:TIME?": lambda m: f"{m.time_min:.2f}",
    "STAT:OPER?": HotplateModel._status,
    "MEAS:TEMP?": lambda m: f"{m.plate_temp():.1f}",
    "FETC:TEMP?": HotplateModel._fetch_temp,
}
_SETTERS: dict[str, Callable[[HotplateModel, str], None]] = {
    "SOUR:TEMP": HotplateModel._set_temp,
    "SOUR:TIME": HotplateModel._set_time,
    "SAMP:ID": HotplateModel._set_sample,
}
_ACTIONS: dict[str, Callable[[HotplateModel], None]] = {
    "*CLS": lambda m: m._errors.clear(),
    "*RST": lambda m: m.reset(power_on=True),
    "INIT": HotplateModel._init,
    "ABOR": HotplateModel._abort,
}
