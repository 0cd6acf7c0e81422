"""Which initial-design points come back: points of the space-filling start that were abandoned without a
result (an instrument fault that used up its retries, a trial lost some other way) are offered again before
the design moves on, so the design stays the one the planner chose.

A pure function of the trial records: the same campaign file always gives the same points, in the order
of their first trial, and the engine journals each re-offer (`events.InitialPointOffered`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from closedloop.controller.store.reads import TrialRecord

# How often one design point is offered (the first time included) before the design moves on without it:
# once more after it was abandoned, so that one recipe that always breaks the instrument cannot hold a
# campaign up. Fault retries of one offer (`instrument_fault_retries`) do not count as offers.
MAX_OFFERS = 2


@dataclass(frozen=True)
class AbandonedPoint:
    """An initial-design point to offer again: the last trial that tried it, and the first (whose
    proposal says how the point was chosen)."""

    last: TrialRecord
    first: TrialRecord


def point_key(conditions: dict) -> str:
    return json.dumps(conditions, sort_keys=True, default=str)


def abandoned_initial_points(
    trials: Sequence[TrialRecord],
    *,
    is_initial: Callable[[TrialRecord], bool],
    refused: Collection[int],
) -> list[AbandonedPoint]:
    """The initial-design points that have no result and nothing in flight, whose every trial was
    abandoned, offered fewer than MAX_OFFERS times, in the order of their first trial.

    `is_initial(trial)`: the trial's proposal was an initial-design point (asked only of a point's first
    trials, not of its retries). `refused`: ids of trials the safety gate or the driver refused as outside
    the instrument's envelope: such a point is never offered again, the instrument would refuse it again.
    """
    by_point: dict[str, list[TrialRecord]] = {}
    for t in sorted(trials, key=lambda t: t.id):
        by_point.setdefault(point_key(t.conditions), []).append(t)
    out = []
    for group in by_point.values():
        if any(t.state != "abandoned" or t.id in refused for t in group):
            continue  # measured, failed, in flight, rejected, or refused by the envelope
        offers = [t for t in group if t.origin != "retry"]
        if not offers or len(offers) >= MAX_OFFERS or not any(is_initial(t) for t in offers):
            continue
        out.append(AbandonedPoint(last=group[-1], first=offers[0]))
    return out


__all__ = ["MAX_OFFERS", "AbandonedPoint", "abandoned_initial_points"]
