"""The OPV line's solution-handling and spin-coating robot, speaking checksummed sentences
(`drivers.nmea`), served by the emulator framework as model "opv_robot".

Every command gets one reply sentence; a line that is not a well-formed sentence or fails its checksum
gets `$NAK,<reason>` and does nothing.

  $ID                       -> $ID,OPVBOT,SC-200,SN042,2.1
  $COAT,<sample>,<acceptor fraction 0-1>,<solvent>,<rpm 500-6000>
                            -> $ACK,COAT,<sample>: mixes the blend, dispenses, spins and dries the film
                               and measures it with the built-in profilometer (COAT_S in all). A COAT of
                               the sample already being coated or just done is acknowledged again
                               without a new film, so a re-send after a lost reply is harmless.
  $STAT                     -> $STAT,BUSY,<sample> | $STAT,DONE,<sample> | $STAT,IDLE
  $THK,<sample>             -> $THK,<sample>,<nm> (profilometer, 1 % repeatability) or $THK,<sample>,DEWET
  $ABORT                    -> $ACK,ABORT: stops the spinner; a film being made is scrapped
  $SAFE                     -> $ACK,SAFE: abort, close the solution valves, park the arm
  errors                    -> $ERR,<code>,<text>: BUSY, RANGE, SOLVENT, NODATA, UNKNOWN

The film physics is the TRMC process model's: thickness from `coated_thickness_nm`, dewetting with
`dewetting_probability`, drawn from the stream (seed, sample), so re-coating a sample id after a crash
makes the same film. Each film is written to the line's `FilmLedger` when coating starts.
"""

from __future__ import annotations

import math

import numpy as np

from closedloop.drivers.base import Clock
from closedloop.drivers.nmea import SentenceError, frame, unframe
from closedloop.drivers.opv_robot import COAT_S, FRACTION_RANGE, IDENTITY, SOLVENTS, SPIN_RANGE
from closedloop.simulators.line.ledger import CoatedFilm, FilmLedger, shared_ledger
from closedloop.simulators.trmc.process import TrmcProcessModel, coated_thickness_nm

PROFILOMETER_SD = 0.01


class OpvRobotModel:
    """The robot behind `handle(line)`; time comes from `clock`, films go to `ledger`."""

    def __init__(self, clock: Clock, seed: int = 0, ledger: FilmLedger | None = None) -> None:
        self.clock = clock
        self.seed = seed
        self.ledger = ledger if ledger is not None else shared_ledger()
        self.model = TrmcProcessModel()
        self._sample: int | None = None  # the film being made or made last
        self._done_at = -math.inf
        self.reset()

    def reset(self) -> None:
        """Power cycle: a film being made is lost, and so is the last one's thickness reading."""
        if self._sample is not None and self._busy():
            self.ledger.discard(self._sample)
        self._sample = None
        self._done_at = -math.inf
        self._thickness: float | None = None  # nm, None for a dewetted film
        self.parked = True

    def handle(self, line: str) -> str:
        try:
            fields = unframe(line)
        except SentenceError:
            return frame("NAK", "CHECKSUM" if "*" in line else "FORMAT")
        command, args = fields[0].upper(), fields[1:]
        if command == "ID":
            return frame("ID", *IDENTITY.split(","))
        if command == "COAT":
            return self._coat(args)
        if command == "STAT":
            if self._sample is None:
                return frame("STAT", "IDLE")
            return frame("STAT", "BUSY" if self._busy() else "DONE", str(self._sample))
        if command == "THK":
            return self._thk(args)
        if command in ("ABORT", "SAFE"):
            if self._sample is not None and self._busy():
                self.ledger.discard(self._sample)
                self._sample, self._done_at = None, -math.inf
            self.parked = self.parked or command == "SAFE"
            return frame("ACK", command)
        return frame("ERR", "UNKNOWN", command)

    def _busy(self) -> bool:
        return self.clock.now() < self._done_at

    def _coat(self, args: list[str]) -> str:
        if len(args) != 4:
            return frame("ERR", "FORMAT", "COAT takes sample fraction solvent rpm")
        sample, fraction, solvent, rpm = _integer(args[0]), _number(args[1]), args[2].lower(), _number(args[3])
        if sample is not None and sample == self._sample:
            return frame("ACK", "COAT", str(sample))  # the same film again: a re-sent command
        if self._busy():
            return frame("ERR", "BUSY", str(self._sample))
        if sample is None or sample < 0:
            return frame("ERR", "RANGE", "sample")
        if fraction is None or not FRACTION_RANGE[0] <= fraction <= FRACTION_RANGE[1]:
            return frame("ERR", "RANGE", "fraction")
        if solvent not in SOLVENTS:
            return frame("ERR", "SOLVENT", solvent)
        if rpm is None or not SPIN_RANGE[0] <= rpm <= SPIN_RANGE[1]:
            return frame("ERR", "RANGE", "rpm")
        rng = np.random.default_rng([self.seed, sample])
        dewetted = bool(rng.random() < self.model.dewetting_probability(rpm))
        thickness = coated_thickness_nm(rpm, solvent)
        self._thickness = None if dewetted else thickness * (1.0 + PROFILOMETER_SD * rng.standard_normal())
        self.ledger.record_coat(sample, CoatedFilm(fraction, solvent, rpm, thickness, dewetted))
        self._sample, self._done_at = sample, self.clock.now() + COAT_S
        self.parked = False
        return frame("ACK", "COAT", str(sample))

    def _thk(self, args: list[str]) -> str:
        sample = _integer(args[0]) if len(args) == 1 else None
        if sample is None or sample != self._sample or self._busy():
            return frame("ERR", "NODATA", args[0] if args else "")
        shown = "DEWET" if self._thickness is None else f"{self._thickness:.1f}"
        return frame("THK", str(sample), shown)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _integer(text: str) -> int | None:
    value = _number(text)
    return int(value) if value is not None and value.is_integer() else None
