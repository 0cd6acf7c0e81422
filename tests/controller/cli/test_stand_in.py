"""`--sim` and `sim://furnace` stand in for the furnace only: a serial protocol written for another
instrument is refused before anything runs, instead of dry-running against the furnace and blaming the
real instrument for the furnace's answers (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from closedloop.controller.cli.main import main
from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.protocol.validate import validate_protocol
from tests import paths

OVEN = """\
name: oven-foreign
version: 1
space:
  oven_temp: {type: float, low: 100, high: 300, unit: degC}
objectives:
  yield_pct: {direction: maximize, unit: percent}
instrument:
  driver: serial
  connection: CONNECTION
  IDENTIFY
  set:
    oven_temp: "TEMP {value:.1f}"
  measure:
    yield_pct: {query: "YIELD?", parse: float, unit: percent}
  safe_state: ["TEMP 25"]
  envelope:
    oven_temp: {min: 20, max: 350, unit: degC}
planner: {initial: {method: sobol, n: 3}, seed: 1}
budget: {trials: 4}
approval: none
"""


def oven(tmp_path: Path, *, identify: str = 'identify: {query: "*IDN?", expect: "ACME,OVEN-9"}',
         connection: str = "/dev/ttyUSB7") -> Path:
    path = tmp_path / "oven.yaml"
    path.write_text(OVEN.replace("IDENTIFY", identify).replace("CONNECTION", connection))
    return path


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_dry_run_of_another_instrument_is_refused_naming_the_identity(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = invoke("validate", "--dry-run", "--scratch-dir", scratch, oven(tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "identifying as 'ACME,OVEN-9' (identify.expect)" in result.output
    assert "sim://furnace" in result.output and "--port" in result.output
    assert list(scratch.iterdir()) == []  # nothing ran against the furnace


def test_without_identify_the_commands_show_it_is_another_instrument(tmp_path: Path) -> None:
    result = invoke("run", "--sim", oven(tmp_path, identify=""), "--db", tmp_path / "c.sqlite")
    assert result.exit_code == 2, result.output
    assert "has no set.oven_temp, measure.yield_pct" in result.stderr
    assert not (tmp_path / "c.sqlite").exists()


def test_validate_refuses_a_sim_connection_to_another_instrument_at_the_field(tmp_path: Path) -> None:
    report = validate_protocol(load_protocol(oven(tmp_path, connection="sim://furnace")))
    assert not report.valid
    [problem] = [p for p in report.problems if "identify.expect" in str(p)]
    assert "instrument.connection" in str(problem) or ":9:" in str(problem)


@pytest.mark.parametrize("expect", ["KILNCO,TF-1200", "^KILNCO"])
def test_the_furnace_protocol_still_stands_in(tmp_path: Path, expect: str) -> None:
    text = (paths.PROTOCOLS / "serial_furnace.yaml").read_text()
    path = tmp_path / "furnace.yaml"
    path.write_text(text.replace('expect: "KILNCO,TF-1200"', f'expect: "{expect}"').replace("budget: {trials: 30", "budget: {trials: 8"))
    result = invoke("validate", "--dry-run", path)
    assert result.exit_code == 0, result.output
