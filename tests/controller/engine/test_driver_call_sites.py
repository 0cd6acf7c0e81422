"""Every place the engine calls a driver, with the driver raising there: in virtual time and live (a worker
thread per trial), with a plain bug, with `SystemExit` and with asyncio's `CancelledError` (both
BaseExceptions, which an `except Exception` boundary lets through: a worker thread that dies that way never
reports back, and a live campaign waited for ever on a hot instrument, issue 19).

Each case asserts that the campaign ends (paused or stopped, never `running`) without an exception
escaping to the caller, that the failure is journaled, and that the instrument was made safe.
"""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine import halting as halting_module
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.store.errors import StorageFailed
from closedloop.drivers.base import DriverDescription, InstrumentContext, Journal, Measurement
from closedloop.records import Value
from closedloop.simulators.testfunctions import TEST_FUNCTIONS
from tests.controller.cli.test_disk_full import fill_disk_after

ERRORS: dict[str, Callable[[], BaseException]] = {
    "KeyError": lambda: KeyError("x"),
    "SystemExit": lambda: SystemExit(3),
    "CancelledError": lambda: asyncio.CancelledError(),
}


class FaultyInstrument:
    """Branin behind a driver with every optional ability (recover, abort, a journal) that raises
    `error()` at `site` and works everywhere else. `run_s`: how long a live trial takes (in clock sleeps,
    which an abort interrupts), `ignore_abort`: sleep with time.sleep instead, as a driver stuck in a
    blocking call would."""

    def __init__(self, site: str, error: Callable[[], BaseException], *, run_s: float = 0.0,
                 ignore_abort: bool = False) -> None:
        self.site, self.error = site, error
        self.run_s, self.ignore_abort = run_s, ignore_abort
        self.calls: list[str] = []
        self.running = threading.Event()

    def _call(self, site: str) -> None:
        self.calls.append(site)
        if site == self.site:
            raise self.error()

    def describe(self) -> DriverDescription:
        return TEST_FUNCTIONS["branin"].description

    def check(self, conditions: Mapping[str, Value]) -> None:
        self.describe().envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.running.set()
        ctx.journal("tx", "HEAT ON")
        if self.ignore_abort:
            time.sleep(self.run_s)
        elif self.run_s:
            ctx.clock.sleep(self.run_s)
        self._call("run")
        if self.site == "run returns no Measurement":
            return {"y": 1.0}  # type: ignore[return-value]
        y = TEST_FUNCTIONS["branin"].evaluate(conditions)
        return Measurement(values={"y": y}, units={"y": ""}, analysis="test", analysis_version="1")

    def safe_state(self) -> None:
        self._call("safe_state")

    def close(self) -> None:
        self._call("close")

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        self._call("recover")
        return None

    def abort(self) -> None:
        self._call("abort")

    def set_journal(self, journal: Journal | None) -> None:
        self._call("set_journal")


def journaled(c: Campaign, *kinds: str) -> list[str]:
    return [f"{e['kind']}: {e['detail']}" for e in c.store.events(kinds=list(kinds))]


@pytest.mark.parametrize("error", list(ERRORS))
@pytest.mark.parametrize("live", [False, True], ids=["virtual", "live"])
@pytest.mark.parametrize("site", ["run", "run returns no Measurement", "safe_state", "set_journal", "close"])
def test_a_driver_failing_at_any_call_site_ends_the_campaign_cleanly(
    branin_protocol, tmp_path: Path, site: str, live: bool, error: str
) -> None:
    path = branin_protocol(trials=3, n_init=3, retries=0, on_fault="pause")
    driver = FaultyInstrument(site, ERRORS[error])
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        halt = c.run_with([Station("faulty", driver, virtual=not live)], gate=protocol_gate(c.protocol))
        status = c.status()["status"]
        faults, safe, driver_errors = journaled(c, "fault"), journaled(c, "safe_state"), journaled(c, "driver_error")
        states = [t.state for t in c.store.trials()]
    assert status in ("paused", "stopped") and status == ("paused" if halt.paused else "stopped")
    assert "safe_state" in driver.calls and driver.calls[-1] == "close"
    if site.startswith("run"):
        # the first trial's fault pauses the campaign (on_fault: pause, no retries); made safe after it
        assert halt.paused and states == ["abandoned"] and len(faults) == 1
        expected = "not a Measurement" if site.endswith("Measurement") else {"KeyError": "KeyError", "SystemExit": "3",
                                                                              "CancelledError": "CancelledError"}[error]
        assert expected in faults[0]
        assert driver.calls.count("safe_state") == 2
    elif site == "safe_state":
        # every trial measured; the safe state at the end raised, is journaled, the campaign still stops
        assert not halt.paused and states == ["measured"] * 3
        assert len(safe) == 1 and f"raised {error}" in safe[0]
    elif site == "set_journal":
        # the safe state is still sent (unjournaled), and the journal says why
        assert not halt.paused and states == ["measured"] * 3 and len(safe) == 1
        assert driver_errors == [f"driver_error: faulty: set_journal: {error}: {ERRORS[error]()}"]
    else:  # close: after the campaign has stopped, journaled for the campaign
        assert not halt.paused and states == ["measured"] * 3
        assert driver_errors == [f"driver_error: faulty: close: {error}: {ERRORS[error]()}"]


@pytest.mark.parametrize("error", list(ERRORS))
def test_a_driver_whose_recover_fails_has_its_interrupted_trial_run_again(branin_protocol, tmp_path: Path,
                                                                         error: str) -> None:
    path = branin_protocol(trials=2, n_init=2, retries=1, on_fault="pause")
    db = tmp_path / "c.sqlite"
    with Campaign.create(path, db) as c:  # a trial the controller died in the middle of
        trial = c.store.add_trial({"x1": 1.0, "x2": 2.0}, proposer="test", origin="initial")
        for state in ("approved", "dispatched", "running"):
            c.store.transition(trial, state, instrument="faulty")
    driver = FaultyInstrument("recover", ERRORS[error])
    with Campaign.open(db, writer=True) as c:
        halt = c.run_with([Station("faulty", driver, virtual=True)], gate=protocol_gate(c.protocol))
        trials = c.store.trials()
        driver_errors = journaled(c, "driver_error")
    assert not halt.paused and driver.calls[0] == "recover"
    assert driver_errors[0].startswith(f"driver_error: faulty: recover trial {trial}: {error}")
    assert trials[0].state == "abandoned" and trials[1].retry_of == trial and trials[1].state == "measured"


def interrupt_when(started: threading.Event) -> threading.Thread:
    """Ctrl-C for the main thread as soon as a trial is running (what SIGINT/SIGTERM do under the CLI)."""

    def press() -> None:
        started.wait(30)
        time.sleep(0.2)
        _thread.interrupt_main()

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


class Interrupted(NamedTuple):
    paused: bool
    took_s: float
    driver_errors: list[str]
    aborts: list[str]
    states: list[str]
    status: str


def interrupted_run(path: Path, tmp_path: Path, driver: FaultyInstrument) -> Interrupted:
    """Ctrl-C arrives while `driver` runs a trial: what the campaign did and journaled."""
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        interrupt_when(driver.running)
        started = time.monotonic()
        halt = c.run_with([Station("faulty", driver, virtual=False)], gate=protocol_gate(c.protocol))
        took = time.monotonic() - started
        return Interrupted(halt.paused, took, journaled(c, "driver_error"), journaled(c, "operator_abort"),
                           [t.state for t in c.store.trials()], c.status()["status"])


@pytest.mark.parametrize("error", list(ERRORS))
def test_an_abort_that_raises_is_journaled_and_the_interrupted_campaign_still_pauses_safe(
    branin_protocol, tmp_path: Path, error: str
) -> None:
    driver = FaultyInstrument("abort", ERRORS[error], run_s=30.0)
    run = interrupted_run(branin_protocol(trials=3, n_init=3, retries=0), tmp_path, driver)
    assert run.paused and run.status == "paused" and run.took_s < 10
    driver_errors, aborts = run.driver_errors, run.aborts
    assert driver_errors[0].startswith(f"driver_error: faulty: abort: {error}")
    # the clock's abort still stopped the trial; it is recorded as an operator abort and made safe
    assert len(aborts) == 1 and "safe_state" in driver.calls


def test_a_trial_that_ignores_the_abort_is_given_up_after_the_grace_period_and_the_station_made_safe(
    branin_protocol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(halting_module, "ABORT_GRACE_S", 1.0)
    driver = FaultyInstrument("nowhere", ERRORS["KeyError"], run_s=20.0, ignore_abort=True)
    run = interrupted_run(branin_protocol(trials=3, n_init=3, retries=0), tmp_path, driver)
    driver_errors, aborts, states = run.driver_errors, run.aborts, run.states
    assert run.paused and run.took_s < 8  # 0.2 s to the interrupt, 1 s of grace; not the trial's 20 s
    assert driver_errors == ["driver_error: faulty: stop trial 1: TimeoutError: still running 1 s after the abort"]
    assert aborts == ["operator_abort: did not stop within 1 s of the abort"]
    assert states[0] == "abandoned" and "safe_state" in driver.calls


@pytest.mark.parametrize("virtual", [True, False], ids=["virtual", "live"])
def test_a_campaign_file_that_cannot_be_written_leaves_every_instrument_safe(
    branin_protocol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, virtual: bool
) -> None:
    fill_disk_after(monkeypatch, pages=4)  # the disk fills through SQLite's own limit
    driver = FaultyInstrument("nowhere", ERRORS["KeyError"])
    with Campaign.create(branin_protocol(trials=40, n_init=40), tmp_path / "c.sqlite") as c, pytest.raises(StorageFailed):
        c.run_with([Station("faulty", driver, virtual=virtual)], gate=protocol_gate(c.protocol))
    assert driver.calls.count("run") >= 1  # it was working when the file filled up
    assert driver.calls[-2:] == ["safe_state", "close"]  # made safe, then closed, before the failure was reported
