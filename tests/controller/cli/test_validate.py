"""`closedloop validate`: summaries for valid protocols, JSON for machines, the checks behind them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.protocol.model import load_protocol, parse_protocol_text
from closedloop.controller.protocol.validate import validate_protocol
from tests import paths

ROOT = paths.ROOT
EXAMPLES = sorted((ROOT / "protocols").glob("*.yaml"))


def test_the_example_protocols_ship() -> None:
    assert [p.name for p in EXAMPLES] == [
        "hotplate_stirrer.yaml", "manual_spin_coating.yaml", "mbe_srruo3.yaml", "opv_device_mf.yaml", "opv_line.yaml", "pool_melting_points.yaml",
        "serial_furnace.yaml", "trmc_opv_blend.yaml", "trmc_opv_pareto.yaml",
    ]
    for path in EXAMPLES:
        assert path.read_text().startswith("# "), f"{path.name} needs a comment header a user can learn from"
    data = ROOT / "protocols" / "data"
    assert {"melting_points.csv", "PROVENANCE.md", "LICENSE_mse_ML_datasets_MIT.txt"} <= {p.name for p in data.iterdir()}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_protocol_is_valid(path: Path) -> None:
    report = validate_protocol(load_protocol(path))
    assert report.valid, [str(p) for p in report.problems]
    assert report.summary.feasible is True


def test_summary_of_the_trmc_example() -> None:
    result = CliRunner().invoke(main, ["validate", str(ROOT / "protocols" / "trmc_opv_blend.yaml")])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "valid: opv-blend-trmc" in out
    assert "anneal_temp        float   60 .. 200 degC" in out  # parameter, unit, range
    assert "spin_speed         int     600 .. 4000 rpm, step 100" in out
    assert "solvent            choice  chlorobenzene | o-dichlorobenzene | chloroform" in out
    assert "constraints (feasible):" in out and "anneal_temp + 2 * anneal_time <= 220" in out
    assert "maximize phi_sum_mu_max [cm^2/(V*s)], log scale" in out
    assert "instrument: trmc at sim://trmc; measures phi_sum_mu_max [cm^2/(V*s)], tau_half [ns]" in out
    assert "anneal_temp        40 below, 50 above degC" in out  # envelope 20..250 degC
    assert "budget: 40 trials (8 initial, sobol), at most 12 h; approval: none" in out
    assert result.stderr == ""


def test_margins_are_in_the_envelope_unit_when_the_protocol_uses_another(tmp_path: Path) -> None:
    text = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text()
    text = text.replace("{type: float, low: 60, high: 200, unit: degC}", "{type: float, low: 350, high: 450, unit: K}")
    text = text.replace("anneal_temp + 2 * anneal_time <= 220", "anneal_temp + 2 * anneal_time <= 500")
    report = validate_protocol(parse_protocol_text(text, tmp_path / "k.yaml"))
    assert report.valid, [str(p) for p in report.problems]
    (margin,) = [m for m in report.summary.envelope_margins if m.parameter == "anneal_temp"]
    assert margin.unit == "degC"
    assert margin.low_margin == pytest.approx(350 - 273.15 - 20)
    assert margin.high_margin == pytest.approx(250 - (450 - 273.15))


def test_feasible_region_is_proved_with_a_point_that_satisfies_every_constraint(tmp_path: Path) -> None:
    text = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text().replace(
        '  - "anneal_temp + 2 * anneal_time <= 220"',
        '  - "anneal_temp + 2 * anneal_time <= 220"\n  - "anneal_temp - 4 * anneal_time >= 100"\n  - "acceptor_fraction <= 0.9"',
    )
    protocol = parse_protocol_text(text, tmp_path / "c.yaml")
    report = validate_protocol(protocol)
    assert report.valid
    point = report.summary.feasible_example
    space = protocol.to_problem().space
    assert all(c.holds(point) for c in space.constraints)
    assert [c.redundant for c in report.summary.constraints] == [False, False, True]


def test_json_output_is_one_document_for_all_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "protocols" / "mbe_srruo3.yaml").read_text().replace("high: 850", "high: 950"))
    result = CliRunner().invoke(main, ["validate", "--json", str(ROOT / "protocols" / "mbe_srruo3.yaml"), str(bad)])
    assert result.exit_code == 2
    good_result, bad_result = json.loads(result.stdout)
    assert good_result["valid"] is True and good_result["problems"] == []
    summary = good_result["summary"]
    assert summary["instrument"]["driver"] == "mbe"
    assert {m["parameter"]: m["high_margin"] for m in summary["envelope_margins"]}["substrate_temp"] == 50.0
    assert any("ramps at most 30 degC/min" in note for note in summary["notes"])
    assert bad_result["valid"] is False and bad_result["summary"] is None
    (problem,) = bad_result["problems"]
    assert problem["field"] == "space.substrate_temp.high" and problem["file"] == str(bad)
    assert "above the mbe instrument's maximum 900 degC" in problem["message"]
    assert problem["line"] == 1 + bad.read_text().splitlines().index(
        next(line for line in bad.read_text().splitlines() if "high: 950" in line)
    )


def test_step_limits_narrower_than_the_range_are_noted(tmp_path: Path) -> None:
    text = (ROOT / "protocols" / "serial_furnace.yaml").read_text().replace("max_step: 300", "max_step: 100")
    report = validate_protocol(parse_protocol_text(text, tmp_path / "s.yaml"))
    assert report.valid
    assert any("anneal_temp: the range spans 250 degC" in note and "at most 100 degC" in note for note in report.summary.notes)


def test_a_budget_within_the_initial_design_is_noted_not_refused(tmp_path: Path) -> None:
    # A screen of space-filling points only is a campaign `run` accepts, so validate accepts it too.
    text = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text().replace("budget: {trials: 40,", "budget: {trials: 5,")
    report = validate_protocol(parse_protocol_text(text, tmp_path / "screen.yaml"))
    assert report.valid, [str(p) for p in report.problems]
    assert any("the budget (5 trials) ends within the initial design (planner.initial.n = 8)" in note
               for note in report.summary.notes), report.summary.notes


def test_the_pool_summary_counts_candidate_rows() -> None:
    result = CliRunner().invoke(main, ["validate", str(ROOT / "protocols" / "pool_melting_points.yaml")])
    assert result.exit_code == 0, result.stderr
    assert "pool: 248 candidate rows from" in result.stdout
    assert "instrument: sim:lookup at sim://lookup; measures Tm_K [K]" in result.stdout


def test_validate_needs_at_least_one_file() -> None:
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 2  # click's usage error
    assert "Missing argument" in result.stderr


def test_help_lists_the_validate_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "validate" in result.stdout


def test_validate_all_examples_in_a_real_process() -> None:
    done = subprocess.run([sys.executable, "-m", "closedloop", "validate", *map(str, EXAMPLES)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": valid: ") == len(EXAMPLES) == 9 and done.stderr == ""


# --- run and resume refuse what validate refuses, before a campaign file is created or changed (issue 19) ---

FURNACE = (ROOT / "protocols" / "serial_furnace.yaml").read_text()
BEYOND_THE_ENVELOPE = ("low: 150, high: 400, unit: degC", "low: 150, high: 500, unit: degC")  # the furnace stops at 450
NO_GAS_LIMIT = ("    gas_flow:    {min: 0, max: 500, unit: sccm}\n", "")
# A short, model-free campaign: what is under test is the start, not the planning.
SHORT = ("planner: {initial: {method: sobol, n: 6}, seed: 3}", "planner: {initial: {method: sobol, n: 2}, acquisition: random}")


def _furnace(tmp_path: Path, *edits: tuple[str, str], name: str = "furnace.yaml") -> Path:
    text = FURNACE.replace("trials: 30", "trials: 3")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit", [BEYOND_THE_ENVELOPE, NO_GAS_LIMIT], ids=["range_beyond_envelope", "moved_without_limit"])
def test_run_refuses_what_validate_refuses_and_creates_no_file(tmp_path: Path, edit: tuple[str, str]) -> None:
    protocol = _furnace(tmp_path, edit)
    validated = CliRunner().invoke(main, ["validate", str(protocol)])
    assert validated.exit_code == 2
    db = tmp_path / "campaign.sqlite"
    result = CliRunner().invoke(main, ["run", str(protocol), "--sim", "--db", str(db), "--no-report"])
    assert result.exit_code == 2, result.output
    assert not db.exists() and list(tmp_path.iterdir()) == [protocol]
    assert "Traceback" not in result.stderr and result.stderr.strip() == validated.stderr.strip()


def test_resume_refuses_a_stored_protocol_validate_refuses_and_changes_nothing(tmp_path: Path) -> None:
    from closedloop.controller.store.campaign_store import CampaignStore, software_versions

    # A campaign started before the check existed: its stored protocol limits nothing for gas_flow.
    text = _furnace(tmp_path, NO_GAS_LIMIT).read_text()
    db = tmp_path / "old.sqlite"
    CampaignStore.create(db, name="old", protocol_text=text, protocol_path=str(tmp_path / "furnace.yaml"), seed=1,
                         versions=software_versions()).close()
    before = db.read_bytes()
    result = CliRunner().invoke(main, ["resume", str(db), "--sim", "--no-report"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert "instrument.envelope.gas_flow: missing" in result.stderr and str(tmp_path / "furnace.yaml") in result.stderr
    assert db.read_bytes() == before


def test_an_unchecked_envelope_is_shown_at_start_and_journaled(tmp_path: Path) -> None:
    from closedloop.controller.campaign import Campaign

    protocol = _furnace(tmp_path, SHORT, (NO_GAS_LIMIT[0], '    unchecked: "bench MFC, limited to 200 sccm in hardware"\n'))
    db = tmp_path / "bench.sqlite"
    result = CliRunner().invoke(main, ["run", str(protocol), "--sim", "--db", str(db), "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "WARNING: UNCHECKED: no envelope limit for gas_flow" in result.stderr
    with Campaign.open(db) as campaign:
        (event,) = campaign.store.events(kinds=["envelope_unchecked"])
    assert "gas_flow" in event["detail"] and "limited to 200 sccm in hardware" in event["detail"]
