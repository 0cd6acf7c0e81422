"""What happened to each film on a simulated OPV line, keyed by sample id (the trial id the drivers send).

A line's instruments are separate emulators: the coating robot (`simulators.line.robot`), one or more hot
plates (`simulators.line.hotplate`) and the TRMC station (`simulators.trmc.wire`). A film goes from one to
the next by hand or by arm, which no wire carries, so the emulators share this ledger instead: the robot
writes what it coated, a hot plate how it annealed the sample on it, and the TRMC station reads the film's
whole history when it loads sample n (`SAMP:ID n` then `SAMP:LOAD`, no `SAMP:PREP`).

`shared_ledger()` is the one ledger of this process. `--sim` builds every `sim://` emulator in the
controller's process, so a line run with `--sim` shares films. Emulators in different processes do not:
a film coated by a robot emulator in one process is unknown to a TRMC emulator in another, which then
answers `SAMP:LOAD` with an error naming the sample (the driver raises InstrumentFault). Serve a whole
line from one process to run it on ptys.

Only the latest anneal of a sample is kept: a retried anneal step replaces it, since the process model
knows one anneal per film.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from closedloop.drivers.base import Value

ROOM_TEMP_C = 25.0  # an unannealed film stays at room temperature


@dataclass(frozen=True)
class CoatedFilm:
    """What the coating robot made: the blend, how it was spun, and the film's thickness (nm)."""

    acceptor_fraction: float
    solvent: str
    spin_speed: float  # rpm
    thickness_nm: float
    dewetted: bool


@dataclass(frozen=True)
class Anneal:
    temp_c: float
    time_min: float


@dataclass(frozen=True)
class FilmRecord:
    """One sample's history; `coated` None when a hot plate annealed a sample no robot here coated."""

    sample: int
    coated: CoatedFilm | None = None
    anneal: Anneal | None = None

    def conditions(self) -> dict[str, Value]:
        """The one-instrument TRMC conditions that make this film (unannealed: room temperature, 0 min).
        ValueError when the film was never coated here."""
        if self.coated is None:
            raise ValueError(f"sample {self.sample} was never coated on this line")
        anneal = self.anneal or Anneal(ROOM_TEMP_C, 0.0)
        return {
            "acceptor_fraction": self.coated.acceptor_fraction,
            "solvent": self.coated.solvent,
            "spin_speed": self.coated.spin_speed,
            "anneal_temp": anneal.temp_c,
            "anneal_time": anneal.time_min,
        }


class FilmLedger:
    """Films by sample id; safe to use from the threads serving several emulators."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._films: dict[int, FilmRecord] = {}

    def record_coat(self, sample: int, film: CoatedFilm) -> None:
        """A new film under `sample` (a re-coat replaces the old film and its anneal)."""
        with self._lock:
            self._films[sample] = FilmRecord(sample, coated=film)

    def record_anneal(self, sample: int, anneal: Anneal) -> None:
        with self._lock:
            self._films[sample] = replace(self._films.get(sample, FilmRecord(sample)), anneal=anneal)

    def discard(self, sample: int) -> None:
        """Forget a film (its coating was aborted)."""
        with self._lock:
            self._films.pop(sample, None)

    def film(self, sample: int) -> FilmRecord | None:
        with self._lock:
            return self._films.get(sample)

    def clear(self) -> None:
        with self._lock:
            self._films.clear()


_SHARED = FilmLedger()


def shared_ledger() -> FilmLedger:
    """The ledger every line emulator built in this process uses (see the module docstring)."""
    return _SHARED
