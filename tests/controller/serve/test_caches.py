"""The dashboard's caches: twenty pages cost one look per poll and one state per change they are told of."""

from __future__ import annotations

import time
from pathlib import Path

from closedloop.controller.serve.caches import StateCache, Throttled


def test_a_page_told_of_a_change_gets_a_state_at_least_that_new_computed_once_for_all_pages() -> None:
    path = Path("campaign.sqlite")
    marker = [(5, 10, 2, 0)]
    computed: list[tuple[int, ...]] = []

    def compute(p: Path) -> bytes:
        computed.append(marker[0])
        return repr(marker[0]).encode()

    states = StateCache(Throttled(lambda p: marker[0], interval=0.0), compute)
    assert states.get(path) == b"(5, 10, 2, 0)"
    marker[0] = (6, 12, 2, 0)  # the campaign wrote; twenty pages are told of marker (6, 12, 2, 0)
    first = states.get(path, at_least=(6, 12, 2, 0))
    marker[0] = (7, 15, 3, 0)  # and wrote again while the pages were asking
    others = {states.get(path, at_least=(6, 12, 2, 0)) for _ in range(19)}
    assert first == b"(6, 12, 2, 0)" and others == {first}
    assert len(computed) == 2, "the nineteen other pages must be served the state computed for the first"
    assert states.get(path, at_least=(7, 15, 3, 0)) == b"(7, 15, 3, 0)"  # a newer event: computed again
    assert states.get(path) == b"(7, 15, 3, 0)" and len(computed) == 3  # no change since: no computation


def test_a_throttled_look_is_taken_at_most_once_per_interval() -> None:
    looks: list[float] = []
    marker = Throttled(lambda p: looks.append(time.monotonic()) or len(looks), interval=0.2)
    values = [marker.get(Path("c.sqlite")) for _ in range(50)]
    assert values == [1] * 50 and len(looks) == 1
    time.sleep(0.25)
    assert marker.get(Path("c.sqlite")) == 2
