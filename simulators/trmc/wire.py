"""The TRMC station's SCPI-like command set, served by the emulator framework as model "trmc".

One station = a sample robot (spin coater + hot plate), an OPO laser with a shutter, an X-band cavity
and a digital oscilloscope. The physics and the process model are those of `SimulatedTrmcStation`; this
model only puts them behind the wire, the way the station's control PC does.

Commands (setters have no reply; errors go to the queue read by SYST:ERR?):
  *IDN?  *RST  *CLS  *OPC? (1 when no operation is pending, else 0: poll it)  SYST:ERR?
  SAMP:ACC <fraction>  SAMP:TEMP <degC>  SAMP:TIME <min>  SAMP:SPIN <rpm>  SAMP:SOLV <name>
  SAMP:ID <n> (the label of the next film: its random stream is (seed, n), so re-making a film after a
  crash gives the same film and record; without a label films are numbered in order)
  SAMP:PREP (spin-coat + anneal a new film; takes 60 s + the anneal time)  SAMP:LOAD (into the cavity, 30 s)
  On a line: SAMP:ID <n> then SAMP:LOAD without SAMP:PREP loads film n as the line made it (the
  `FilmLedger` of the coating robot and hot plates, see simulators/line/ledger.py; 270 s for the transfer),
  or queues an error naming the sample when no robot in this process coated it
  SAMP:THK? (film thickness, nm)  SAMP:OD? (optical density at the excitation wavelength)
  EXC:WAV <nm>  EXC:FLU <photons/cm^2>  EXC:ATT <transmission 0-1> (fluence = full fluence * transmission)
  EXC:SHUT OPEN|CLOS  EXC:SHUT?  (and EXC:WAV?, EXC:FLU?)
  CAV:TUNE (20 s)  CAV:F0? (Hz)  CAV:Q?  CAV:PR? (dark reflected power, mW)  CAV:SENS? (A_sheet, 1/S)
  ACQ:AVER <n>  ACQ:SING (averages shots at 10 Hz; needs a loaded, tuned sample and an open shutter)
  WAV:FORM INT16|FLOAT32|ASCII  WAV:PRE? (x increment, x origin, y increment, y origin, points)
  CURV? (the averaged dPr/Pr record: INT16/FLOAT32 as an IEEE-488.2 definite-length block of little-endian
  samples, ASCII as one line of comma-separated values (7 significant digits, y increment 1, y origin 0);
  value = y origin + y increment * sample, time = x origin + i * x increment)

`last_transient` and `last_film` keep the most recent acquisition's physics, so tests can compare an
analysis of the wire data with the ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from closedloop.drivers.base import Clock, Value
from closedloop.drivers.trmc import SOLVENTS
from closedloop.simulators.line.ledger import FilmLedger, shared_ledger
from closedloop.simulators.scpi_device import ScpiDeviceState
from closedloop.simulators.trmc.physics import (
    Acquisition,
    Cavity,
    Film,
    SimulatedTransient,
    simulate_transient,
)
from closedloop.simulators.trmc.process import DEFAULT_FLUENCE, TrmcProcessModel

IDN = "CLOSEDLOOP,TRMC-SIM,SN0001,1.0"
SPIN_COAT_S = 60.0
LOAD_S = 30.0
LINE_LOAD_S = 270.0
TUNE_S = 20.0
SHOT_RATE_HZ = 10.0
FULL_FLUENCE = 1e16  # photons/cm^2 at transmission 1 (EXC:ATT)
INT16_FULL_SCALE = 30000  # codes used for the largest sample, headroom left below 32767
_NUMERIC_SAMPLE = {  # command -> (condition, low, high)
    "SAMP:ACC": ("acceptor_fraction", 0.0, 1.0),
    "SAMP:TEMP": ("anneal_temp", 20.0, 250.0),
    "SAMP:TIME": ("anneal_time", 0.0, 120.0),
    "SAMP:SPIN": ("spin_speed", 500.0, 6000.0),
}


class TrmcWireModel(ScpiDeviceState):
    """The station behind `handle(line)`; time comes from `clock` (scaled wall time or a trial's clock)."""

    def __init__(self, clock: Clock, seed: int = 0, ledger: FilmLedger | None = None) -> None:
        self.clock = clock
        self.seed = seed
        self.ledger = ledger if ledger is not None else shared_ledger()
        self.model = TrmcProcessModel()
        self.samples_made = 0
        self._film_key = 0  # the label (or number) of the film made last
        self.last_transient: SimulatedTransient | None = None
        self.last_film: Film | None = None
        self.reset(power_on=True)

    def reset(self, power_on: bool = False) -> None:
        """Power cycle: settings back to defaults, shutter closed, the film and the record lost."""
        self.recipe: dict[str, Value] = {}
        self.sample_id: int | None = None  # SAMP:ID: the label of the next film
        self.wavelength = 500.0
        self.fluence = DEFAULT_FLUENCE
        self.shutter_open = False
        self.averages = 64
        self.word_format = "INT16"
        self._film: Film | None = None
        self._rng: np.random.Generator | None = None
        self._loaded = False
        self._cavity: Cavity | None = None
        self._dark_power = 0.0
        self._record: tuple[np.ndarray, np.ndarray] | None = None
        self.clear_state(power_on)

    # -- the command set -------------------------------------------------------------------------

    def handle(self, line: str) -> str | bytes | None:
        text = line.strip()
        header, _, argument = text.partition(" ")
        header = header.upper()
        argument = argument.strip()
        query = _QUERIES.get(header)
        if query is not None:
            return query(self)
        setter = _SETTERS.get(header)
        if setter is not None:
            setter(self, argument)
            return None
        if header in _NUMERIC_SAMPLE:
            name, low, high = _NUMERIC_SAMPLE[header]
            value = self._number(argument, low, high)
            if value is not None:
                self.recipe[name] = value
            return None
        action = _ACTIONS.get(header)
        if action is not None:
            action(self)
            return None
        self._error(f'-113,"Undefined header;{text}"')
        return None

    def _conditions(self) -> dict[str, Value]:
        return {**self.recipe, "wavelength": self.wavelength, "fluence": self.fluence}

    # -- sample handling -------------------------------------------------------------------------

    def _set_solvent(self, argument: str) -> None:
        solvent = argument.lower()
        if solvent not in SOLVENTS:
            self._error('-224,"Illegal parameter value"')
            return
        self.recipe["solvent"] = solvent

    def _prepare(self) -> None:
        missing = [n for n in ("acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent")
                   if n not in self.recipe]
        if missing:
            self._error(f'-221,"Settings conflict;recipe lacks {" ".join(missing)}"')
            return
        if not self._start(SPIN_COAT_S + 60.0 * float(self.recipe["anneal_time"])):
            return
        self._film_key = self.samples_made if self.sample_id is None else self.sample_id
        self._rng = np.random.default_rng([self.seed, self._film_key])
        self.samples_made += 1
        self.sample_id = None
        conditions = self._conditions()
        self._film = self.model.sample_film(conditions, self._rng)[0]
        self._loaded = False
        self._cavity = None
        self._record = None

    def _load(self) -> None:
        if self.sample_id is not None:  # labelled but not made here: a film from the line
            self._load_from_line(self.sample_id)
            return
        if self._film is None:
            self._error('-221,"Settings conflict;no sample prepared (SAMP:PREP)"')
            return
        if self._start(LOAD_S):
            self._loaded = True
            self._cavity = None

    def _load_from_line(self, sample: int) -> None:
        """Film `sample` as the line made it: the same film, scatter and record the station would make
        from the same conditions, except that dewetting was decided on the coater."""
        made = self.ledger.film(sample)
        if made is None or made.coated is None:
            self._error(f'-221,"Settings conflict;sample {sample} unknown to the line (no robot in this '
                        'process coated it)"')
            return
        if not self._start(LINE_LOAD_S):
            return
        self.recipe = made.conditions()
        self._film_key, self.sample_id = sample, None
        self._rng = np.random.default_rng([self.seed, sample])
        fails = 1.0 if made.coated.dewetted else self.model.later_failure_probability(self.recipe)
        self._film = self.model.sample_film(self._conditions(), self._rng, fails)[0]
        self._loaded = True
        self._cavity = None
        self._record = None

    def _set_sample_id(self, argument: str) -> None:
        value = self._number(argument, 0, 2**31 - 1)
        if value is not None and value.is_integer():
            self.sample_id = int(value)
        elif value is not None:
            self._error('-104,"Data type error"')

    def _thickness(self) -> str:
        if self._film is None:
            return "9.91E+37"
        # The robot's profilometer reports the nominal thickness of the recipe, not the film's own.
        return f"{self.model.expected_film(self._conditions()).thickness_cm * 1e7:.6E}"

    def _optical_density(self) -> str:
        if self._film is None:
            return "9.91E+37"
        # The robot measures OD at the excitation wavelength (a UV-vis spot on the film).
        return f"{self.model.expected_film(self._conditions()).od:.6E}"

    # -- excitation, cavity, acquisition ---------------------------------------------------------

    def _set_wavelength(self, argument: str) -> None:
        value = self._number(argument, 300.0, 1100.0)
        if value is not None:
            self.wavelength = value

    def _set_fluence(self, argument: str) -> None:
        value = self._number(argument, 1e12, FULL_FLUENCE)
        if value is not None:
            self.fluence = value

    def _set_attenuation(self, argument: str) -> None:
        value = self._number(argument, 1e-4, 1.0)
        if value is not None:
            self.fluence = FULL_FLUENCE * value

    def _set_shutter(self, argument: str) -> None:
        state = argument.upper()
        if state not in ("OPEN", "CLOS", "CLOSE"):
            self._error('-224,"Illegal parameter value"')
            return
        self.shutter_open = state == "OPEN"

    def _set_averages(self, argument: str) -> None:
        value = self._number(argument, 1, 1024)
        if value is not None and value.is_integer():
            self.averages = int(value)
        elif value is not None:
            self._error('-104,"Data type error"')

    def _set_format(self, argument: str) -> None:
        if argument.upper() not in ("INT16", "FLOAT32", "ASCII"):
            self._error('-224,"Illegal parameter value"')
            return
        self.word_format = argument.upper()

    def _tune(self) -> None:
        if not self._loaded or self._rng is None:
            self._error('-221,"Settings conflict;no sample in the cavity (SAMP:LOAD)"')
            return
        if not self._start(TUNE_S):
            return
        n = self._film_key
        phase = 2.0 * math.pi * (self.seed % 97) / 97.0
        drift = math.sin(n / 25.0 + phase)
        self._cavity = Cavity(
            f0_hz=9.1e9 * (1.0 + 3e-4 * drift + 5e-5 * self._rng.standard_normal()),
            q=2500.0 * (1.0 + 0.03 * drift + 0.01 * self._rng.standard_normal()),
        )
        self._dark_power = 3.0 * (1.0 + 0.02 * self._rng.standard_normal())

    def _cavity_value(self, pick: Callable[[Cavity], float]) -> str:
        if self._cavity is None:
            self._error('-230,"Data stale;cavity not tuned (CAV:TUNE)"')
            return "9.91E+37"
        return f"{pick(self._cavity):.9E}"

    def _acquire(self) -> None:
        if self._cavity is None or self._film is None or self._rng is None:
            self._error('-221,"Settings conflict;tune the cavity with a sample loaded first"')
            return
        if not self.shutter_open:
            self._error('-221,"Settings conflict;laser shutter closed"')
            return
        if not self._start(self.averages / SHOT_RATE_HZ):
            return
        believed = self.model.expected_film(self._conditions())
        # The film was made at PREP; its absorbance follows whatever wavelength excites it now.
        sample = replace(self._film, od=believed.od)
        baseline = 4e-5 * math.sin(self._film_key / 17.0 + 1.3 * (self.seed % 89))
        acquisition = Acquisition(averages=self.averages, baseline_offset=baseline)
        excitation = self.model.excitation(self._conditions())
        transient = simulate_transient(sample, excitation, self._cavity, acquisition, self._rng, calibration_film=believed)
        self.last_transient, self.last_film = transient, sample
        self._record = (transient.time_s, transient.dPr_over_Pr)

    def _waveform(self) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """(time, samples on the wire, y increment, y origin), or None with an error queued."""
        if self._busy() or self._record is None:
            self._error('-230,"Data corrupt or stale"')
            return None
        time_s, y = self._record
        if self.word_format == "FLOAT32":
            return time_s, y.astype("<f4"), 1.0, 0.0
        if self.word_format == "ASCII":
            return time_s, y, 1.0, 0.0
        y_origin = float(0.5 * (y.max() + y.min()))
        y_increment = float(max(np.abs(y - y_origin).max(), 1e-12) / INT16_FULL_SCALE)
        codes = np.round((y - y_origin) / y_increment).astype("<i2")
        return time_s, codes, y_increment, y_origin

    def _preamble(self) -> str:
        wave = self._waveform()
        if wave is None:
            return "9.91E+37,9.91E+37,9.91E+37,9.91E+37,0"
        time_s, samples, y_increment, y_origin = wave
        x_increment = float(time_s[1] - time_s[0])
        return f"{x_increment:.9E},{float(time_s[0]):.9E},{y_increment:.9E},{y_origin:.9E},{samples.size}"

    def _curve(self) -> str | bytes:
        wave = self._waveform()
        if self.word_format == "ASCII":
            # Like a scope's ASCII transfer: one value per sample; no record is SCPI's "not a number".
            return "9.91E+37" if wave is None else ",".join(f"{v:.6E}" for v in wave[1])
        payload = b"" if wave is None else wave[1].tobytes()
        length = str(len(payload))
        return f"#{len(length)}{length}".encode("ascii") + payload


_QUERIES: dict[str, Callable[[TrmcWireModel], str | bytes]] = {
    "*IDN?": lambda m: IDN,
    "*OPC?": lambda m: "0" if m._busy() else "1",
    "SYST:ERR?": TrmcWireModel._pop_error,
    "SAMP:THK?": TrmcWireModel._thickness,
    "SAMP:OD?": TrmcWireModel._optical_density,
    "EXC:WAV?": lambda m: f"{m.wavelength:.3f}",
    "EXC:FLU?": lambda m: f"{m.fluence:.6E}",
    "EXC:SHUT?": lambda m: "OPEN" if m.shutter_open else "CLOS",
    "CAV:F0?": lambda m: m._cavity_value(lambda c: c.f0_hz),
    "CAV:Q?": lambda m: m._cavity_value(lambda c: c.q),
    "CAV:PR?": lambda m: m._cavity_value(lambda c: m._dark_power),
    "CAV:SENS?": lambda m: m._cavity_value(lambda c: c.sheet_sensitivity),
    "ACQ:AVER?": lambda m: str(m.averages),
    "WAV:FORM?": lambda m: m.word_format,
    "WAV:PRE?": TrmcWireModel._preamble,
    "CURV?": TrmcWireModel._curve,
}
_SETTERS: dict[str, Callable[[TrmcWireModel, str], None]] = {
    "SAMP:SOLV": TrmcWireModel._set_solvent,
    "SAMP:ID": TrmcWireModel._set_sample_id,
    "EXC:WAV": TrmcWireModel._set_wavelength,
    "EXC:FLU": TrmcWireModel._set_fluence,
    "EXC:ATT": TrmcWireModel._set_attenuation,
    "EXC:SHUT": TrmcWireModel._set_shutter,
    "ACQ:AVER": TrmcWireModel._set_averages,
    "WAV:FORM": TrmcWireModel._set_format,
}
_ACTIONS: dict[str, Callable[[TrmcWireModel], None]] = {
    "*RST": lambda m: m.reset(power_on=True),
    "*CLS": lambda m: m.clear_errors(),
    "SAMP:PREP": TrmcWireModel._prepare,
    "SAMP:LOAD": TrmcWireModel._load,
    "CAV:TUNE": TrmcWireModel._tune,
    "ACQ:SING": TrmcWireModel._acquire,
}
