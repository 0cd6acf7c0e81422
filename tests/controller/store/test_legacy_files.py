"""Campaign files written before the restructure (issue #18) open, report, resume and audit today.

tests/data/legacy/ holds a TRMC campaign written by closedloop 0.1.0 and SIGKILLed while trial 6 was
running (how it was made is in its README). Each test works on a copy: the fixture stays as it was written.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.offline.audit import audit
from tests import paths

LEGACY = paths.DATA / "legacy" / "trmc-killed-v0.1.0.sqlite"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    copy = tmp_path / "old.sqlite"
    shutil.copy(LEGACY, copy)
    return copy


def test_the_fixture_is_what_its_readme_says() -> None:
    with sqlite3.connect(f"file:{LEGACY}?mode=ro", uri=True) as db:
        states = dict(db.execute("SELECT id, state FROM trials").fetchall())
        versions = db.execute("SELECT versions FROM campaign").fetchone()[0]
    assert states == {1: "failed", 2: "measured", 3: "measured", 4: "measured", 5: "failed", 6: "running"}
    assert "closedloop" in versions


def test_an_old_file_opens_and_reports_its_status(legacy: Path) -> None:
    with Campaign.open(legacy) as c:
        status = c.status()
        proposal = c.store.proposal(6)
    # Killed while running: the file still says so, and with no writer left `status` says interrupted.
    assert (status["stored_status"], status["status"]) == ("running", "interrupted")
    assert (status["results"], status["budget"]) == (5, 10)
    assert status["counts"] == {"failed": 2, "measured": 3, "running": 1}
    assert status["best"]["values"]["phi_sum_mu_max"] == pytest.approx(0.000978674, rel=1e-5)
    assert proposal is not None and proposal.provenance.design == "model" and proposal.provenance.seed is not None


@pytest.mark.slow
def test_an_old_file_audits_its_inputs_exactly_and_says_where_it_was_recorded(legacy: Path) -> None:
    # Recorded on another machine with no CPU in its versions: every planner input must re-derive exactly
    # (the hashes), the Sobol points bit for bit, and the GP proposals to the precision a different
    # processor allows; the report says why they need not be bit for bit.
    report = audit(legacy)
    assert [c.verdict for c in report.checks if c.verdict == "data"] == [], report.lines()
    assert all(c.verdict == "match" for c in report.checks if c.planner == "sobol"), report.lines()
    assert report.max_rel_difference < 1e-2, report.lines()
    assert report.environment_differences[0].startswith("cpu not recorded (now ")
    assert any("recorded elsewhere: cpu not recorded" in line for line in report.lines())


@pytest.mark.slow
def test_a_campaign_recorded_here_audits_bit_for_bit_and_records_its_processor(branin_protocol, tmp_path: Path) -> None:
    with Campaign.create(branin_protocol(trials=6, n_init=4), tmp_path / "c.sqlite") as c:
        c.run()
        versions = c.store.campaign()["versions"]
    assert versions["cpu"] and versions["scipy"] != "not installed"
    report = audit(tmp_path / "c.sqlite")
    assert report.all_match and report.environment_differences == (), report.lines()


@pytest.mark.slow
def test_an_old_killed_campaign_resumes_to_its_budget(legacy: Path) -> None:
    with Campaign.open(legacy, writer=True) as c:
        halt = c.resume()
        trials = c.store.trials()
        kinds = [e["kind"] for e in c.store.events()]
    assert halt.kind is HaltKind.BUDGET and halt.text == "budget: 10 of 10 trials done"
    # Trial 6 was running when the process died: abandoned, journaled, and run again as a retry.
    assert trials[5].state == "abandoned" and trials[5].detail.startswith("interrupted")
    retry = next(t for t in trials if t.retry_of == 6)
    assert retry.conditions == trials[5].conditions and retry.state in ("measured", "failed")
    assert sum(t.state in ("measured", "failed") for t in trials) == 10
    assert "resume" in kinds and kinds[-1] == "stop"
