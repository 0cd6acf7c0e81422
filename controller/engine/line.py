"""Samples between the steps of a line: who waits for which step since when, and what each has measured.

The engine asks `waiting_for(step)` when a station of that step is free, records each step's result with
`step_done`, and turns the sample's whole way into one trial result with `result` at the last step. Pure
bookkeeping over the engine's clock: nothing here talks to an instrument or the campaign file.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from closedloop.controller.protocol.workflow import Step
from closedloop.drivers.base import Measurement


@dataclass
class SampleSoFar:
    """What a sample's finished steps measured (an intermediate film thickness), and how long they took."""

    values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0

    def add(self, measurement: Measurement) -> None:
        self.values.update(measurement.values)
        self.units.update({k: v for k, v in measurement.units.items() if k in measurement.values})
        self.duration_s += measurement.duration_s


@dataclass(frozen=True)
class Waiting:
    trial_id: int
    since: float  # when the previous step ended (engine clock)


def predicted_wait(ready_at: float, next_free_at: Sequence[float], ahead_ready_at: Sequence[float],
                   next_s: float | None) -> float:
    """How long a sample ready for the next step at `ready_at` would wait for one of its stations.

    `next_free_at`: when each station of the next step frees (inf when it is busy for an unknown time);
    `ahead_ready_at`: when each sample already bound for that step is ready for it (they go first, in that
    order); `next_s`: how long the step takes (its mean so far; None: unknown, a station a sample takes
    is then busy for an unknown time)."""
    slots = sorted(next_free_at)
    for ready in sorted(ahead_ready_at):
        start = max(slots[0], ready)
        slots[0] = start + next_s if next_s is not None else math.inf
        slots.sort()
    return max(0.0, slots[0] - ready_at)


class LineQueues:
    """Samples waiting for each step. The first step takes new proposals; only a sample whose first step
    a crash interrupted waits for it here (to run it again)."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        self._waiting: dict[int, deque[Waiting]] = {step.index: deque() for step in self.steps}
        self._so_far: dict[int, SampleSoFar] = {}
        self._durations: dict[int, list[float]] = {}  # step index -> how long each of its runs took

    @property
    def active(self) -> bool:
        return bool(self.steps)

    def next_index(self, index: int, route: Sequence[int] | None = None) -> int | None:
        """The step after step `index` on a sample's `route` (its fidelity's steps; every step by default),
        or None after its last."""
        later = [i for i in (range(len(self.steps)) if route is None else route) if i > index]
        return later[0] if later else None

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def arrive(self, trial_id: int, index: int, since: float, *, first: bool = False) -> None:
        """The sample waits for step `index` from `since` (`first`: ahead of the others, a step repeated)."""
        queue = self._waiting[index]
        (queue.appendleft if first else queue.append)(Waiting(trial_id, since))

    def next_is_waiting(self, index: int) -> bool:
        return bool(self._waiting.get(index))

    def next_for(self, index: int) -> Waiting | None:
        queue = self._waiting.get(index)
        return queue.popleft() if queue else None

    def step_done(self, trial_id: int, measurement: Measurement) -> None:
        self._so_far.setdefault(trial_id, SampleSoFar()).add(measurement)

    def took(self, index: int, seconds: float) -> None:
        """Step `index` ran once for `seconds` (a result or a failed sample): its mean schedules new samples."""
        self._durations.setdefault(index, []).append(seconds)

    def shortest(self, index: int) -> float | None:
        """The shortest run of step `index` so far (None before it has ended once)."""
        seen = self._durations.get(index)
        return min(seen) if seen else None

    def longest(self, index: int) -> float | None:
        """The longest run of step `index` so far (None before it has ended once)."""
        seen = self._durations.get(index)
        return max(seen) if seen else None

    def waiting_for(self, index: int) -> list[Waiting]:
        return list(self._waiting.get(index, ()))

    def so_far(self, trial_id: int) -> SampleSoFar:
        return self._so_far.get(trial_id, SampleSoFar())

    def result(self, trial_id: int, last: Measurement, step: Step) -> Measurement:
        """The trial's result: every step's values with the last step's record; a failed sample's detail
        names the step it failed at."""
        so_far = self._so_far.pop(trial_id, SampleSoFar())
        detail = last.detail if last.status == "ok" else f"failed at {step.name}: {last.detail or last.status}"
        return dataclasses.replace(
            last,
            values={**so_far.values, **last.values},
            units={**so_far.units, **last.units},
            detail=detail,
            duration_s=so_far.duration_s + last.duration_s,
        )

    def drop(self, trial_id: int) -> None:
        """The sample left the line without a result (a fault, a pause): forget what it measured."""
        self._so_far.pop(trial_id, None)
        for queue in self._waiting.values():
            for item in [w for w in queue if w.trial_id == trial_id]:
                queue.remove(item)


__all__ = ["LineQueues", "SampleSoFar", "Waiting"]
