"""Whatever a driver raises ends its trial as a journaled fault, followed by the instrument's safe state and
the protocol's fault policy: in virtual time and live (a worker thread per trial), a driver bug never
leaves the campaign waiting on a hot instrument."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.halts import HaltKind
from closedloop.drivers.base import DriverDescription, InstrumentContext, Measurement
from closedloop.records import Value
from closedloop.simulators.testfunctions import TEST_FUNCTIONS


class BuggyInstrument:
    """Branin's envelope, a driver that raises a plain bug (not an InstrumentFault) on every trial, and a
    record of how often it was made safe. `unsafe`: its safe_state raises as well (it must not)."""

    def __init__(self, *, unsafe: bool = False) -> None:
        self.safe_states = 0
        self.unsafe = unsafe
        self.threads: list[str] = []

    def describe(self) -> DriverDescription:
        return TEST_FUNCTIONS["branin"].description

    def check(self, conditions: Mapping[str, Value]) -> None:
        self.describe().envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.threads.append(threading.current_thread().name)
        ctx.journal("tx", "HEAT ON")
        return {"y": 1.0}["x"]  # type: ignore[return-value]  # a KeyError: a bug, not an instrument fault

    def safe_state(self) -> None:
        self.safe_states += 1
        if self.unsafe:
            raise RuntimeError("the safe-state command itself failed")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("live", [False, True], ids=["virtual time", "live, one thread per trial"])
def test_a_driver_bug_is_a_journaled_fault_then_the_safe_state_then_the_policy(
    branin_protocol, tmp_path: Path, live: bool
) -> None:
    path = branin_protocol(trials=4, retries=1, on_fault="pause")
    driver = BuggyInstrument()
    started = time.monotonic()
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        gate = protocol_gate(c.protocol)
        halt = c.run_with([Station("buggy", driver, virtual=not live)], gate=gate)
        trials = c.store.trials()
        faults = c.store.events(kinds=["fault"])
        safe = c.store.events(kinds=["safe_state"])
    assert time.monotonic() - started < 60
    # The first attempt and its one retry both fail; the policy pauses the campaign.
    assert halt.paused and halt.kind is HaltKind.INSTRUMENT_FAULT and halt.exit_code == 1
    assert [t.state for t in trials] == ["abandoned", "abandoned"] and trials[1].retry_of == 1
    assert all("KeyError" in (e["data"] or {}).get("traceback", "") for e in faults) and len(faults) == 2
    # Made safe after each fault, and once more when the campaign paused (journaled for the campaign).
    assert driver.safe_states == 3 and len(safe) == 1
    assert all(name.startswith("trial-") for name in driver.threads) is live


def test_a_safe_state_that_raises_is_journaled_and_the_campaign_still_pauses(branin_protocol, tmp_path: Path) -> None:
    path = branin_protocol(trials=4, retries=0, on_fault="pause")
    driver = BuggyInstrument(unsafe=True)
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        halt = c.run_with([Station("buggy", driver, virtual=True)], gate=protocol_gate(c.protocol))
        safe = c.store.events(kinds=["safe_state"])
        status = c.status()["status"]
    assert halt.paused and status == "paused"
    assert len(safe) == 2 and all("safe_state raised RuntimeError" in e["detail"] for e in safe)


def test_with_on_fault_continue_a_dead_instrument_pauses_after_three_trials(branin_protocol, tmp_path: Path) -> None:
    """It used to propose for ever: failed attempts are not results, so no budget ever ran out."""
    path = branin_protocol(trials=10, retries=1, on_fault="continue")
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        halt = c.run_with([Station("buggy", BuggyInstrument(), virtual=True)], gate=protocol_gate(c.protocol))
        trials = c.store.trials()
    assert halt.paused and halt.kind is HaltKind.NO_RESULTS
    assert "3 trials in a row used up their fault retries" in halt.text
    assert len(trials) == 6 and {t.state for t in trials} == {"abandoned"}
