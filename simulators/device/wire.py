"""A Keithley 2400-class SMU with a solar simulator and a device jig, served as emulator "smu".

The cells are the device model's (simulators/device/model.py): the same film model as the TRMC station,
a single-diode cell, device scatter and failures. Headers are case-insensitive, with or without the
leading colon; `STAR` and `START` both work. Setters have no reply; errors go to the queue.
  *IDN?  *RST  *CLS  *OPC? (1 when no operation is pending, else 0: poll it)  :SYST:ERR?
  :SOUR:FUNC VOLT   :SOUR:VOLT:MODE SWE   :SOUR:VOLT:STAR <V>  :SOUR:VOLT:STOP <V>  :SOUR:VOLT:STEP <V>
  (signed: negative for a sweep downwards)   :SOUR:DEL <s>   :SENS:FUNC "CURR"   :SENS:CURR:PROT <A>
  (compliance: the current is clipped there)   :SENS:CURR:NPLC <n>   :FORM:ELEM VOLT,CURR   :TRIG:COUN <n>
  (must equal the sweep's points)   :OUTP ON|OFF   :OUTP?   :SOUR2:TTL <0|1> (digital output line 1: the
  solar simulator's shutter, 1 = open)   :SOUR2:TTL?
  :INIT (runs the sweep; takes points x (source delay + NPLC / 50 Hz); needs the output on and a device)
  :FETC? (the last sweep: V1,I1,V2,I2,... in V and A, current into the cell)   :READ? (:INIT and :FETC? at once)
  The jig (not Keithley SCPI; see drivers/smu.py): SAMP:ACC/TEMP/TIME/SPIN/SOLV <value> (a recipe), SAMP:ID <n>
  (the label of the next device: its random stream is (seed, n)), SAMP:LOAD (mount it: 60 s; a labelled device
  without a recipe comes from the line's `FilmLedger`, 270 s, or an error naming the sample).

With the shutter closed a sweep measures the dark curve; noise and hysteresis as `station.smu_sweep` says.
`last_device` keeps the mounted device, so tests can compare the analysis with the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from closedloop.drivers.base import Clock, Value
from closedloop.drivers.trmc import SOLVENTS
from closedloop.simulators.device.model import DeviceModel, DeviceSettings, SampledDevice
from closedloop.simulators.device.station import smu_sweep
from closedloop.simulators.line.ledger import FilmLedger, shared_ledger
from closedloop.simulators.scpi_device import ScpiDeviceState

IDN = "CLOSEDLOOP,SMU2400-SIM,SN0001,1.0"
LOAD_S = 60.0
LINE_LOAD_S = 270.0
LINE_CYCLE_S = 0.02
CELL_AREA_CM2 = 0.1  # the jig's pixel mask
MAX_POINTS = 2500  # the 2400's sweep buffer
_RECIPE = {  # command -> (condition, low, high)
    "SAMP:ACC": ("acceptor_fraction", 0.0, 1.0),
    "SAMP:TEMP": ("anneal_temp", 20.0, 250.0),
    "SAMP:TIME": ("anneal_time", 0.0, 120.0),
    "SAMP:SPIN": ("spin_speed", 500.0, 6000.0),
}
_NUMERIC = {  # command -> (attribute, low, high)
    "SOUR:VOLT:STAR": ("start", -21.0, 21.0),
    "SOUR:VOLT:START": ("start", -21.0, 21.0),
    "SOUR:VOLT:STOP": ("stop", -21.0, 21.0),
    "SOUR:VOLT:STEP": ("step", -21.0, 21.0),
    "SOUR:DEL": ("delay", 0.0, 1000.0),
    "SENS:CURR:PROT": ("compliance", 1e-9, 1.05),
    "SENS:CURR:NPLC": ("nplc", 0.01, 10.0),
    "TRIG:COUN": ("count", 1, MAX_POINTS),
}


class SmuWireModel(ScpiDeviceState):
    """The SMU, the shutter and the jig behind `handle(line)`; time comes from `clock`."""

    def __init__(self, clock: Clock, seed: int = 0, ledger: FilmLedger | None = None,
                 settings: DeviceSettings | None = None) -> None:
        self.clock = clock
        self.seed = seed
        self.ledger = ledger if ledger is not None else shared_ledger()
        self.model = DeviceModel(settings or DeviceSettings())
        self.devices_mounted = 0
        self.last_device: SampledDevice | None = None
        self._rng = np.random.default_rng([seed])  # the mounted device's stream: its sweeps' noise
        self.reset(power_on=True)

    def reset(self, power_on: bool = False) -> None:
        """Power cycle (or *RST): source settings to defaults, output off, shutter closed, the sweep lost.
        The device stays in the jig."""
        self.recipe: dict[str, Value] = {}
        self.sample_id: int | None = None
        self.start, self.stop, self.step = 0.0, 0.0, 0.01
        self.delay, self.compliance, self.nplc, self.count = 0.0, 1.05e-4, 1.0, 1.0
        self.output_on = False
        self.shutter_open = False
        self.volt_source = False
        self._sweep: np.ndarray | None = None
        self.clear_state(power_on)

    def handle(self, line: str) -> str | bytes | None:
        text = line.strip()
        header, _, argument = text.partition(" ")
        header, argument = header.upper().lstrip(":"), argument.strip()
        if header in _QUERIES:
            return _QUERIES[header](self)
        if header in _SETTERS:
            _SETTERS[header](self, argument.upper())
            return None
        if header in _NUMERIC:
            name, low, high = _NUMERIC[header]
            value = self._number(argument, low, high)
            if value is not None:
                setattr(self, name, value)
            return None
        if header in _RECIPE:
            name, low, high = _RECIPE[header]
            value = self._number(argument, low, high)
            if value is not None:
                self.recipe[name] = value
            return None
        if header in _ACTIONS:
            _ACTIONS[header](self)
            return None
        self._error(f'-113,"Undefined header;{text}"')
        return None

    # -- the jig ---------------------------------------------------------------------------------

    def _set_solvent(self, argument: str) -> None:
        if argument.lower() not in SOLVENTS:
            self._error('-224,"Illegal parameter value"')
            return
        self.recipe["solvent"] = argument.lower()

    def _set_sample_id(self, argument: str) -> None:
        value = self._number(argument, 0, 2**31 - 1)
        if value is not None and value.is_integer():
            self.sample_id = int(value)
        elif value is not None:
            self._error('-104,"Data type error"')

    def _load(self) -> None:
        """Mount a device: made to the recipe, or (labelled, no recipe) the one the line made."""
        key = self.devices_mounted if self.sample_id is None else self.sample_id
        rng = np.random.default_rng([self.seed, key])
        if self.recipe:
            missing = sorted({"acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent"} - set(self.recipe))
            if missing:
                self._error(f'-221,"Settings conflict;recipe lacks {" ".join(missing)}"')
                return
            if not self._start(LOAD_S):
                return
            device = self.model.sample_device(self.recipe, rng)
        else:
            made = None if self.sample_id is None else self.ledger.film(self.sample_id)
            if made is None or made.coated is None:
                self._error(f'-221,"Settings conflict;sample {self.sample_id} unknown to the line (no robot '
                                    'in this process coated it)"')
                return
            if not self._start(LINE_LOAD_S):
                return
            conditions = made.conditions()
            film_fails = 1.0 if made.coated.dewetted else self.model.film.later_failure_probability(conditions)
            device = self.model.sample_device(conditions, rng, film_fails)
        self.last_device, self._rng = device, rng
        self.devices_mounted += 1
        self.recipe, self.sample_id, self._sweep = {}, None, None

    # -- source and measure ----------------------------------------------------------------------

    def _set_output(self, argument: str) -> None:
        if argument not in ("ON", "OFF", "1", "0"):
            self._error('-224,"Illegal parameter value"')
            return
        self.output_on = argument in ("ON", "1")

    def _set_shutter(self, argument: str) -> None:
        if argument not in ("0", "1"):
            self._error('-224,"Illegal parameter value"')
            return
        self.shutter_open = argument == "1"

    def _set_function(self, argument: str) -> None:
        if argument not in ("VOLT", "VOLTAGE"):
            self._error('-224,"Illegal parameter value;this jig sources voltage only"')
            return
        self.volt_source = True

    def _init(self) -> None:
        if self.last_device is None:
            self._error('-221,"Settings conflict;no device mounted (SAMP:LOAD)"')
            return
        if not (self.output_on and self.volt_source):
            self._error('-221,"Settings conflict;output off or not sourcing voltage"')
            return
        if self.step == 0 or (self.stop - self.start) * self.step < 0:
            self._error('-221,"Settings conflict;step sign does not lead from start to stop"')
            return
        points = int(round(abs(self.stop - self.start) / abs(self.step))) + 1
        if points != int(self.count) or points > MAX_POINTS:
            self._error(f'-221,"Settings conflict;TRIG:COUN {int(self.count)} but the sweep has {points} points"')
            return
        if not self._start(points * (self.delay + self.nplc * LINE_CYCLE_S)):
            return
        voltage, current = smu_sweep(self.last_device.cell, self.start, self.stop, self.step, area_cm2=CELL_AREA_CM2,
                                     compliance_A=self.compliance, lit=self.shutter_open, rng=self._rng)
        self._sweep = np.stack([voltage, current], axis=1)

    def _fetch(self) -> str:
        if self._busy() or self._sweep is None:
            self._error('-230,"Data corrupt or stale"')
            return "9.91E+37,9.91E+37"
        return ",".join(f"{x:+.6E}" for x in self._sweep.ravel())

    def _read(self) -> str:
        self._init()
        self._busy_until = -math.inf  # READ? answers when the sweep is done
        return self._fetch()


_QUERIES: dict[str, Callable[[SmuWireModel], str]] = {
    "*IDN?": lambda m: IDN,
    "*OPC?": lambda m: "0" if m._busy() else "1",
    "SYST:ERR?": SmuWireModel._pop_error,
    "SYST:ERR:NEXT?": SmuWireModel._pop_error,
    "OUTP?": lambda m: "1" if m.output_on else "0",
    "SOUR2:TTL?": lambda m: "1" if m.shutter_open else "0",
    "FETC?": SmuWireModel._fetch,
    "READ?": SmuWireModel._read,
}
_SETTERS: dict[str, Callable[[SmuWireModel, str], None]] = {
    "SOUR:FUNC": SmuWireModel._set_function,
    "SOUR:VOLT:MODE": lambda m, a: None if a in ("SWE", "SWEEP") else m._error('-224,"Illegal parameter value"'),
    "SENS:FUNC": lambda m, a: None if a.strip('"') in ("CURR", "CURR:DC") else m._error('-224,"Illegal parameter value"'),
    "FORM:ELEM": lambda m, a: None if a.replace(" ", "") == "VOLT,CURR" else m._error('-224,"Illegal parameter value"'),
    "OUTP": SmuWireModel._set_output,
    "SOUR2:TTL": SmuWireModel._set_shutter,
    "SAMP:SOLV": SmuWireModel._set_solvent,
    "SAMP:ID": SmuWireModel._set_sample_id,
}
_ACTIONS: dict[str, Callable[[SmuWireModel], None]] = {
    "*RST": lambda m: m.reset(power_on=True),
    "*CLS": lambda m: m.clear_errors(),
    "INIT": SmuWireModel._init,
    "SAMP:LOAD": SmuWireModel._load,
}
