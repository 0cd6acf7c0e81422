"""Which abandoned initial-design points come back: a pure function of the trial records."""

from __future__ import annotations

from closedloop.controller.engine.reoffer import MAX_OFFERS, abandoned_initial_points
from closedloop.controller.store.reads import TrialRecord


def trial(tid: int, x: float, state: str, origin: str = "initial", retry_of: int | None = None) -> TrialRecord:
    return TrialRecord(id=tid, conditions={"x": x}, state=state, proposer="botorch", origin=origin, retry_of=retry_of,
                       attempt=1, instrument=None, created_at=0.0, updated_at=0.0)


def points(trials: list[TrialRecord], refused: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
    found = abandoned_initial_points(trials, is_initial=lambda t: t.origin in ("initial", "manual"), refused=refused)
    return [(p.first.id, p.last.id) for p in found]


def test_only_points_whose_every_trial_was_abandoned_come_back_in_the_order_of_their_first_trial() -> None:
    trials = [
        trial(1, 0.1, "abandoned"), trial(2, 0.1, "abandoned", "retry", 1),  # faulted, retry faulted too
        trial(3, 0.2, "abandoned"), trial(4, 0.2, "measured", "retry", 3),  # its retry gave a result
        trial(5, 0.3, "abandoned"), trial(6, 0.3, "approved", "retry", 5),  # its retry waits for a station
        trial(7, 0.4, "abandoned", "manual"),  # handed out by `ask`, then lost
        trial(8, 0.5, "abandoned", "planner"),  # not a point of the initial design
        trial(9, 0.6, "rejected"),  # refused by the gate or the operator before it ran
    ]
    assert points(trials) == [(1, 2), (7, 7)]
    assert points(list(reversed(trials))) == [(1, 2), (7, 7)]  # deterministic whatever order it is read in


def test_a_point_the_envelope_refused_or_already_offered_again_does_not_come_back() -> None:
    refused = [trial(1, 0.1, "abandoned")]
    assert points(refused, refused=frozenset({1})) == []
    offered = [trial(1, 0.1, "abandoned"), trial(2, 0.1, "abandoned", "retry", 1), trial(3, 0.1, "abandoned")]
    assert MAX_OFFERS == 2 and points(offered) == []  # offered twice (trials 1 and 3), abandoned twice
    assert points(offered[:2]) == [(1, 2)]
