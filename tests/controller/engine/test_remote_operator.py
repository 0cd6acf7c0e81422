"""The operator at the dashboard, as the engine sees them: decisions, pause, resume and abort read from the
campaign's control file while a real campaign runs (issue 25). The dashboard's side is played by a thread
that reads the campaign file read-only and writes requests, as `closedloop serve` does; the browser tests
are in tests/controller/serve."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.report.html import build_report
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.control import ControlChannel

WHO = "tester on the dashboard"


def waits_of(db: Path) -> list[dict]:
    with CampaignStore.open(db) as store:
        return store.events(kinds=["approval_wait"])


def until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the campaign did not get there in time"
        time.sleep(0.05)


def dashboard_script(db: Path, seen: dict[str, object]) -> None:
    """Accept trial 1; edit trial 2 outside the space (refused), then legally; skip trial 3; pause, accept
    trial 4, see it wait and nothing new proposed; resume; abort while trial 5 waits."""
    channel = ControlChannel(db)

    def wait_number(n: int) -> dict:
        until(lambda: len(waits_of(db)) >= n)
        return waits_of(db)[n - 1]

    assert wait_number(1)["trial_id"] == 1
    channel.submit("accept", WHO, trial_id=1)
    assert wait_number(2)["trial_id"] == 2
    channel.submit("accept", WHO, trial_id=1)  # a stale click on a trial no longer waiting: ignored
    channel.submit("edit", WHO, trial_id=2, edited={"x1": 99.0})
    refused = wait_number(3)
    assert refused["trial_id"] == 2 and "x1" in refused["data"]["refusal"]
    channel.submit("edit", WHO, trial_id=2, edited={"x1": 1.5, "x2": 2.5})
    assert wait_number(4)["trial_id"] == 3
    channel.submit("skip", WHO, trial_id=3)
    assert wait_number(5)["trial_id"] == 4
    channel.submit("pause", WHO)
    channel.submit("accept", WHO, trial_id=4)  # approved, but paused before it starts: it waits
    with CampaignStore.open(db) as store:
        until(lambda: store.events(kinds=["hold"]))
        time.sleep(1.5)  # paused: nothing starts and nothing new is proposed however long it waits
        seen["trial_4_while_paused"] = store.trial(4).state
    seen["waits_while_paused"] = len(waits_of(db))
    channel.submit("resume", WHO)
    assert wait_number(6)["trial_id"] == 5  # trial 4 ran first
    channel.submit("abort", WHO)


def test_dashboard_decides_pauses_resumes_and_aborts_a_running_campaign(branin_protocol, tmp_path):
    db = tmp_path / "c.sqlite"
    path = branin_protocol(trials=8, n_init=2, approval="every")
    ControlChannel(db).submit("pause", "someone yesterday")  # made while nothing ran: expired, never carried out
    seen: dict[str, object] = {}
    script = threading.Thread(target=dashboard_script, args=(db, seen), daemon=True)
    with Campaign.create(path, db) as c:
        script.start()
        halt = c.run(approver=c.remote_operator())
        script.join(timeout=30)
        trials = c.store.trials()
        approvals = [e["detail"] for e in c.store.events(kinds=["approval"])]
        holds = [e["detail"] for e in c.store.events(kinds=["hold", "release"])]
    assert halt.paused and halt.kind is HaltKind.OPERATOR and f"aborted by {WHO}" in halt.text
    assert [t.state for t in trials[:4]] == ["measured", "measured", "rejected", "measured"]
    assert trials[1].conditions == {"x1": 1.5, "x2": 2.5}  # the legal edit is what ran
    assert trials[4].state == "proposed" and len(trials) == 5  # aborted while it waited: never sent
    assert seen["waits_while_paused"] == 5 and seen["trial_4_while_paused"] == "approved"
    assert approvals == [f"accepted by operator ({WHO})", "edit refused: " + approvals[1].split(": ", 1)[1],
                         f"edited by operator ({WHO})", f"skipped by operator ({WHO})", f"accepted by operator ({WHO})"]
    assert holds == [f"paused by {WHO}: no new trial starts until resumed", f"resumed by {WHO}"]
    report = build_report(db)  # the report lists the pause and the resume with the operator's decisions
    assert "paused by an operator (no new trials)" in report and f"resumed by {WHO}" in report
    outcomes = [(r.action, r.outcome) for r in reversed(ControlChannel(db).recent())]
    assert outcomes[0] == ("pause", "expired: made while the campaign was not running")
    assert ("accept", "ignored: trial 1 is not waiting for a decision") in outcomes
    assert all(outcome is not None for _, outcome in outcomes), "every request is answered"


def abort_at_wait(db: Path, n: int) -> None:
    """Abort from the dashboard once the campaign has waited for a decision `n` times."""
    until(lambda: len(waits_of(db)) >= n)
    ControlChannel(db).submit("abort", WHO)


def test_an_abort_during_the_first_decision_after_a_resume_pauses_cleanly(branin_protocol, tmp_path):
    db = tmp_path / "c.sqlite"
    with Campaign.create(branin_protocol(trials=4, n_init=2, approval="every"), db) as c:
        first = threading.Thread(target=abort_at_wait, args=(db, 1), daemon=True)
        first.start()
        assert c.run(approver=c.remote_operator()).paused
    with Campaign.open(db, writer=True) as c:
        # The trial left waiting is put to the operator again before the loop starts: an abort there too.
        again = threading.Thread(target=abort_at_wait, args=(db, 2), daemon=True)
        again.start()
        halt = c.resume(approver=c.remote_operator())
        status = c.store.campaign()["status"]
    assert halt.paused and halt.kind is HaltKind.OPERATOR and f"aborted by {WHO}" in halt.text
    assert status == "paused"


def test_a_pause_clicked_while_a_proposal_waits_stops_the_next_station_starting(branin_protocol, tmp_path):
    db = tmp_path / "c.sqlite"
    path = branin_protocol(trials=6, n_init=4, approval="every", options="stations: 2, noise_sd: 0.01")
    seen: dict[str, int] = {}

    def script() -> None:
        channel = ControlChannel(db)
        until(lambda: len(waits_of(db)) >= 1)
        channel.submit("pause", WHO)  # while trial 1 waits; the second station is free
        channel.submit("accept", WHO, trial_id=1)
        with CampaignStore.open(db) as store:
            until(lambda: store.events(kinds=["hold"]))
        time.sleep(1.0)
        with CampaignStore.open(db) as store:
            seen["trials"] = len(store.trials())
        seen["waits"] = len(waits_of(db))
        channel.submit("abort", WHO)

    with Campaign.create(path, db) as c:
        threading.Thread(target=script, daemon=True).start()
        assert c.run(approver=c.remote_operator()).paused
    assert seen == {"trials": 1, "waits": 1}, "the second station started a trial after the pause"
