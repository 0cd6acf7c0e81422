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
        "mbe_srruo3.yaml", "pool_melting_points.yaml", "serial_furnace.yaml", "trmc_opv_blend.yaml", "trmc_opv_pareto.yaml",
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
    assert done.stdout.count(": valid: ") == len(EXAMPLES) == 5 and done.stderr == ""
