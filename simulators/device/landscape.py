"""What a device has that its film does not: a hidden, smooth function of the process conditions.

Contacts, interlayers and electrode deposition react to the film's surface (roughness, vertical phase
separation, solvent residue), which TRMC does not see. The simulator stands for all of that with one
fixed random smooth function: random Fourier features over the conditions scaled to the example
protocol's box, plus an offset per solvent, drawn from `seed`. A few bumps across the box, no more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from closedloop.drivers.base import Value
from closedloop.simulators.trmc.process import SOLVENT_EFFECTS, SearchBox

_FEATURES = 24
_LENGTH_SCALE = 0.3  # of the box: a bump spans about a third of each range
_SOLVENT_WEIGHT = 0.7  # a solvent's offset, relative to the smooth part's spread
_CONTINUOUS = ("acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed")


class HiddenLandscape:
    """A fixed smooth random function of the conditions, mean ~0 and sd ~1 over the box."""

    def __init__(self, seed: int, box: SearchBox | None = None) -> None:
        box = box or SearchBox()
        rng = np.random.default_rng([seed, 22])
        self._low = np.array([box.acceptor_fraction[0], box.anneal_temp[0], box.anneal_time[0], box.spin_speed[0]],
                             dtype=float)
        high = np.array([box.acceptor_fraction[1], box.anneal_temp[1], box.anneal_time[1], box.spin_speed[1]],
                        dtype=float)
        self._span = high - self._low
        self._omega = rng.standard_normal((_FEATURES, len(_CONTINUOUS))) / _LENGTH_SCALE
        self._phase = rng.uniform(0.0, 2.0 * np.pi, _FEATURES)
        offsets = rng.standard_normal(len(SOLVENT_EFFECTS))
        self._solvent = dict(zip(SOLVENT_EFFECTS, _SOLVENT_WEIGHT * offsets, strict=True))

    def values(self, points: Sequence[Mapping[str, Value]]) -> np.ndarray:
        x = np.array([[float(p[name]) for name in _CONTINUOUS] for p in points], dtype=float)
        x = (x - self._low) / self._span
        smooth = np.sqrt(2.0 / _FEATURES) * np.cos(x @ self._omega.T + self._phase).sum(axis=1)
        return smooth + np.array([self._solvent[str(p["solvent"])] for p in points])
