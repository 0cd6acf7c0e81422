"""`closedloop reanalyze`: derived TRMC values recomputed from stored raw transients, old values kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.trmc_analysis import ANALYSIS_NAME, ANALYSIS_VERSION
from tests import paths

ROOT = paths.ROOT


def short_protocol(tmp_path: Path, driver: str = "trmc") -> Path:
    """The example TRMC protocol cut to three space-filling trials (no GP fit: seconds, not minutes)."""
    text = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text()
    text = text.replace("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 3}")
    text = text.replace("initial: {method: sobol, n: 8}", "initial: {method: sobol, n: 3}")
    text = text.replace("driver: trmc", f"driver: {driver}")
    assert "trials: 3" in text and "n: 3" in text and f"driver: {driver}" in text
    path = tmp_path / f"trmc-{driver.replace(':', '-')}.yaml"
    path.write_text(text)
    return path


def run_campaign(tmp_path: Path, driver: str = "trmc") -> Path:
    db = tmp_path / f"{driver.replace(':', '-')}.sqlite"
    result = CliRunner().invoke(main, ["run", str(short_protocol(tmp_path, driver)), "--sim", "--quiet", "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def current_and_superseded(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT superseded, COUNT(*) FROM measurement_info GROUP BY superseded").fetchall()
    counts = dict(rows)
    return counts.get(0, 0), counts.get(1, 0)


def test_reanalysis_adds_new_rows_and_keeps_the_old_ones_superseded(tmp_path: Path) -> None:
    db = run_campaign(tmp_path)
    with CampaignStore.open(db) as store:
        before = {t.id: t for t in store.trials(("measured", "failed"))}
        raw_before = {tid: store.artifacts(tid)["dPr_over_Pr"] for tid in before}
    assert len(before) == 3 and all(r.size > 1000 for r in raw_before.values())  # raw transients stored
    assert current_and_superseded(db) == (3, 0)

    result = CliRunner().invoke(main, ["reanalyze", str(db)])
    assert result.exit_code == 0, result.output
    assert "reanalyzed 3 of 3 trial(s)" in result.output
    for tid in before:
        assert f"trial {tid:>4}" in result.output
    assert f"{ANALYSIS_NAME} {ANALYSIS_VERSION} -> {ANALYSIS_NAME} {ANALYSIS_VERSION}" in result.output
    assert current_and_superseded(db) == (3, 3)

    with CampaignStore.open(db) as store:
        after = {t.id: t for t in store.trials(("measured", "failed"))}
        events = store.events(kinds=["reanalysis"])
        for tid, record in after.items():
            # Same analysis on the same bytes: the same values, now from the new rows.
            assert record.values == pytest.approx(before[tid].values)
            assert record.measurement_status == before[tid].measurement_status
            artifacts = store.artifacts(tid)
            np.testing.assert_array_equal(artifacts["dPr_over_Pr"], raw_before[tid])  # raw record untouched
            assert "summary" in artifacts["fits"]
    assert [e["trial_id"] for e in events] == sorted(before)
    assert all(e["data"]["previous_analysis_version"] == ANALYSIS_VERSION for e in events)
    with sqlite3.connect(db) as conn:
        old_values = conn.execute("SELECT COUNT(*) FROM measurements WHERE superseded = 1").fetchone()[0]
    assert old_values == sum(len(r.values) for r in before.values())  # every old value is still there

    again = CliRunner().invoke(main, ["reanalyze", str(db), "--trial", str(min(before))])
    assert again.exit_code == 0 and "reanalyzed 1 of 1" in again.output
    assert current_and_superseded(db) == (3, 4)


def test_reanalysis_replaces_the_simulator_truth_with_the_real_analysis(tmp_path: Path) -> None:
    """The fast station (`sim:trmc`) records ground truth; reanalysis derives the values from its transients."""
    db = run_campaign(tmp_path, "sim:trmc")
    with CampaignStore.open(db) as store:
        truth = {t.id: t.values for t in store.trials(("measured",))}
    assert truth  # at least one film with a signal, so the comparison below is not vacuous
    result = CliRunner().invoke(main, ["reanalyze", str(db)])
    assert result.exit_code == 0, result.output
    assert f"[trmc-sim-truth 1.0 -> {ANALYSIS_NAME} {ANALYSIS_VERSION}]" in result.output
    with CampaignStore.open(db) as store:
        analyzed = {t.id: t.values for t in store.trials(("measured",))}
        events = store.events(kinds=["reanalysis"])
    assert {e["data"]["analysis"] for e in events} == {ANALYSIS_NAME}
    for tid, values in truth.items():
        assert analyzed[tid]["phi_sum_mu_max"] == pytest.approx(values["phi_sum_mu_max"], rel=0.05)
        assert analyzed[tid]["phi_sum_mu_max"] != values["phi_sum_mu_max"]


def test_a_campaign_without_raw_transients_exits_2(tmp_path: Path, branin_protocol: Callable[..., Path]) -> None:
    db = tmp_path / "branin.sqlite"
    ran = CliRunner().invoke(main, ["run", str(branin_protocol(trials=2, n_init=2)), "--quiet", "--db", str(db)])
    assert ran.exit_code == 0, ran.output
    result = CliRunner().invoke(main, ["reanalyze", str(db)])
    assert result.exit_code == 2
    assert "has a stored raw record (a TRMC transient" in result.output
    assert current_and_superseded(db) == (2, 0)
    missing = CliRunner().invoke(main, ["reanalyze", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_a_device_line_reanalyzes_its_jv_sweeps_and_keeps_what_earlier_steps_measured(tmp_path: Path) -> None:
    """protocols/opv_device_mf.yaml's device route (robot, hot plate, a day's fabrication, the SMU): the
    J-V analysis is redone from the stored sweeps; the film's thickness and plate temperature stay."""
    text = (ROOT / "protocols" / "opv_device_mf.yaml").read_text()
    for old, new in [("  seed: 1\n", "  seed: 1\n  acquisition: random\n"),  # every trial a device (the target)
                     ("budget: {trials: 200, instrument_time: 200 h}", "budget: {trials: 3}")]:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "mf.yaml").write_text(text)
    db = tmp_path / "mf.sqlite"
    ran = CliRunner().invoke(main, ["run", str(tmp_path / "mf.yaml"), "--sim", "--quiet", "--no-report", "--db", str(db)])
    assert ran.exit_code == 0, ran.output
    with CampaignStore.open(db) as store:
        before = {t.id: t for t in store.trials(("measured",))}
    assert before and all({"thickness", "plate_temp", "pce", "voc", "jsc", "ff"} <= set(t.values) for t in before.values())
    result = CliRunner().invoke(main, ["reanalyze", str(db)])
    assert result.exit_code == 0, result.output
    assert "pce " in result.output and "jv-sweep 1.0 -> jv-sweep 1.0" in result.output
    with CampaignStore.open(db) as store:
        after = {t.id: t for t in store.trials(("measured",))}
    for trial_id, t in before.items():
        assert after[trial_id].values == pytest.approx(t.values)  # same analysis version: the same values, all kept
