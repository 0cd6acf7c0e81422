"""Every parameter the planner moves has a finite limit, and setup commands stay inside them (issue 19).

A serial instrument described in YAML used to run with no `envelope` at all, and a setpoint written into
`setup:` (sent before every trial, past the safety gate) was never compared with the envelope.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.protocol.validate import validate_protocol
from tests.controller.protocol.edits import FURNACE, edited, problems, refused_at, validate_cli

ENVELOPE = """\
  envelope:
    anneal_temp: {min: 20, max: 450, unit: degC, max_step: 300}
    anneal_time: {min: 0, max: 240, unit: min}
    gas_flow:    {min: 0, max: 500, unit: sccm}
"""
GAS_LIMIT = "    gas_flow:    {min: 0, max: 500, unit: sccm}\n"
SETUP = 'setup: ["*CLS", "ABOR", "SYST:REM"]'
UNCHECKED = '    unchecked: "bench mass-flow controller, limited in hardware to 200 sccm"\n'


def test_a_serial_instrument_without_an_envelope_is_refused_naming_what_to_add(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, (ENVELOPE, ""))
    line = refused_at(validate_cli(str(bad.path)), bad.path, bad.text.splitlines().index("instrument:") + 1, "instrument.envelope",
                      "anneal_temp, anneal_time, gas_flow", "unit: degC", "unchecked")
    assert "add envelope: {anneal_temp: {min: ..., max: ..., unit: degC}" in line


def test_a_moved_parameter_missing_from_the_envelope_is_refused_at_the_envelope(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, (GAS_LIMIT, ""))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("  envelope:"), "instrument.envelope.gas_flow",
               "gas_flow: {min: ..., max: ..., unit: sccm}")


@pytest.mark.parametrize("end", ["min", "max"])
def test_a_limit_open_on_one_side_is_refused_at_that_limit(tmp_path: Path, end: str) -> None:
    one_sided = "{max: 500, unit: sccm}" if end == "min" else "{min: 0, unit: sccm}"
    bad = edited(tmp_path, FURNACE, ("{min: 0, max: 500, unit: sccm}", one_sided))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("    gas_flow:    {"), f"instrument.envelope.gas_flow.{end}",
               f"needs a {end}")


def test_a_fixed_or_choice_parameter_needs_no_numeric_limit(tmp_path: Path) -> None:
    # Only what the planner moves must be limited: a fixed value is the author's, next to the envelope.
    ok = edited(tmp_path, FURNACE, (GAS_LIMIT, ""),
                ("gas_flow:    {type: float, low: 10, high: 200, unit: sccm}", "gas_flow: {type: fixed, value: 50, unit: sccm}"))
    assert problems(ok.path) == []


def test_unchecked_is_the_explicit_way_out_and_the_summary_says_so(tmp_path: Path) -> None:
    ok = edited(tmp_path, FURNACE, (GAS_LIMIT, UNCHECKED))
    report = validate_protocol(load_protocol(ok.path))
    assert report.valid, [str(p) for p in report.problems]
    assert any(note.startswith("UNCHECKED: no envelope limit for gas_flow") and "limited in hardware" in note
               for note in report.summary.notes), report.summary.notes
    result = validate_cli(str(ok.path))
    assert result.exit_code == 0 and "note: UNCHECKED: no envelope limit for gas_flow" in result.stdout


@pytest.mark.parametrize("value", ["true", '""'])
def test_unchecked_needs_a_reason_not_a_flag(tmp_path: Path, value: str) -> None:
    bad = edited(tmp_path, FURNACE, (GAS_LIMIT, f"    unchecked: {value}\n"))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("    unchecked: "), "instrument.envelope.unchecked",
               "takes the reason")


@pytest.mark.parametrize(("command", "parameter", "words"), [
    ("SOUR:TEMP 600", "anneal_temp", "sets anneal_temp to 600 degC: above the maximum 450"),
    ("sour:temp   -40.5", "anneal_temp", "below the minimum 20"),  # case and spacing as an instrument reads them
    ("SYST:REM;SOUR:TEMP 9e2", "anneal_temp", "above the maximum 450"),  # one part of a compound command
    ("SOUR:DWEL 20000", "anneal_time", "sets anneal_time to 20000 s: above the maximum 240"),  # in the command's unit
])
def test_a_setup_setpoint_outside_the_envelope_is_refused_at_the_command(
    tmp_path: Path, command: str, parameter: str, words: str
) -> None:
    bad = edited(tmp_path, FURNACE, (SETUP, f'setup: ["*CLS", "{command}"]'))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("  setup: ["), "instrument.setup[1]", words,
               f"instrument.envelope.{parameter}")


def test_a_start_setpoint_is_checked_too_and_setpoints_inside_pass(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, ('start: "INIT"', 'start: ["SOUR:FLOW 900", "INIT"]'))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("  start: ["), "instrument.start[0]", "above the maximum 500")
    ok = edited(tmp_path, FURNACE, (SETUP, 'setup: ["*CLS", "SOUR:TEMP 25", "SOUR:DWEL 600", "SYST:ERR:COUN 5"]'),
                name="ok.yaml")
    assert problems(ok.path) == []


def test_a_safe_state_setpoint_above_the_envelope_is_refused_and_going_below_it_is_not(tmp_path: Path) -> None:
    safe = 'safe_state: ["SOUR:TEMP 25", "SOUR:FLOW 0", "ABOR"]'
    bad = edited(tmp_path, FURNACE, (safe, 'safe_state: ["SOUR:TEMP 2500", "SOUR:FLOW 0", "ABOR"]'))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("  safe_state: ["), "instrument.safe_state[0]",
               "sets anneal_temp to 2500 degC: above the maximum 450", "goes wrong")
    off = edited(tmp_path, FURNACE, (safe, 'safe_state: ["SOUR:TEMP 0", "SOUR:FLOW 0", "ABOR"]'), name="off.yaml")
    assert problems(off.path) == []  # 0 degC is below the envelope's 20: heater off is safe
