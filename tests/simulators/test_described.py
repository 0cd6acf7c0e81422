"""An instrument simulated from its own protocol (`simulate:`, simulators.described): the model answers
the protocol's commands, and a dry run, `--sim` and `closedloop emulate --protocol` run against it
(issue 24)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.dryrun.run import dry_run
from closedloop.controller.protocol.instruments import serial_instrument_config
from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.simulators.described import DescribedInstrument, template_pattern
from closedloop.simulators.emulator import FollowedClock
from tests import paths
from tests.emulated import emulator_process

STIRRER = paths.PROTOCOLS / "hotplate_stirrer.yaml"


def stirrer_config() -> SerialInstrumentConfig:
    protocol = load_protocol(STIRRER)
    section = protocol.the_instrument()
    assert isinstance(section, SerialInstrumentConfig)
    return serial_instrument_config(section, protocol.space)


def test_a_template_becomes_the_pattern_of_what_it_sends() -> None:
    pattern = template_pattern("OUT_SP_1 {value:.0f}")
    assert pattern.match("OUT_SP_1 140").group("value") == "140"
    assert pattern.match("OUT_SP_1 140 2") is None and pattern.match("OUT_SP_4 140") is None
    assert template_pattern("SAMP:ID {sample};TEMP {value}").match("SAMP:ID 7;TEMP -1.5e2").group("value") == "-1.5e2"


def test_the_model_answers_the_protocols_commands() -> None:
    clock = FollowedClock()
    model = DescribedInstrument(stirrer_config(), clock, seed=0)
    assert model.handle("IN_NAME") == "HS-7 v2.1"
    for line in ("RESET", "OUT_SP_1 115", "OUT_SP_4 600", "OUT_SP_6 1200"):
        assert model.handle(line) is None
    assert model.setpoints == {"plate_temp": 115.0, "stir_speed": 600.0, "stir_time": pytest.approx(20.0)}  # 1200 s in min
    assert model.handle("IN_STATUS") == "READY"
    model.handle("START_6")
    assert model.handle("IN_STATUS") == "RUNNING"
    clock.sleep(1199)
    assert model.handle("IN_STATUS") == "RUNNING"
    clock.sleep(2)
    assert model.handle("IN_STATUS") == "READY"
    reply = model.handle("IN_PV_5")
    assert isinstance(reply, str) and reply.endswith(" 5")
    expected = 60 * (1 - math.exp(-1)) + 8
    assert float(reply.split()[0]) == pytest.approx(expected, rel=0.15)  # 3 % noise
    assert model.truth({"plate_temp": 115, "stir_speed": 600, "stir_time": 20})["viscosity_trend"] == pytest.approx(expected)


def test_the_instrument_refuses_what_a_real_one_would() -> None:
    model = DescribedInstrument(stirrer_config(), FollowedClock(), seed=0)
    model.handle("OUT_SP_1 100")
    model.handle("OUT_SP_1 400")  # above the stirrer's own range (ranges: 0..340 degC)
    assert model.setpoints["plate_temp"] == 100.0 and list(model.errors) == ['-222,"Data out of range"']
    model.handle("SELF_DESTRUCT")
    assert list(model.errors)[-1] == '-113,"Undefined header"'
    assert model.handle("IN_PV_9") is None  # an unknown query gets no reply, as on the wire


def test_a_dry_run_runs_against_the_protocols_own_simulation(tmp_path: Path) -> None:
    report = dry_run(STIRRER, scratch_dir=tmp_path)
    assert report.exit_code == 0
    assert "the protocol's own simulate: section" in report.instrument
    assert report.stop_reason.startswith(("budget", "no improvement"))
    [db] = tmp_path.glob("*.sqlite")
    store = CampaignStore.open(db)
    try:
        sent = [c["text"] for c in store.commands() if c["direction"] == "tx" and c["text"].startswith("OUT_SP_6 ")]
    finally:
        store.close()
    seconds = [float(c.split()[1]) for c in sent]
    assert seconds and all(5 * 60 - 1 <= s <= 60 * 60 + 1 for s in seconds)  # the timer gets seconds


def test_without_a_simulation_the_dry_run_says_how_to_add_one(tmp_path: Path) -> None:
    text = STIRRER.read_text()
    path = tmp_path / "stirrer.yaml"
    path.write_text(text[: text.index("  simulate:")] + text[text.index("planner:"):])
    result = CliRunner().invoke(main, ["validate", "--dry-run", str(path)])
    assert result.exit_code == 2, result.output
    assert "no simulator exists for this instrument" in result.output
    assert "simulate:" in result.output and "pyvisa_sim" in result.output
    assert "Traceback" not in result.output


def test_emulate_serves_the_protocols_simulation_on_a_pty(tmp_path: Path) -> None:
    text = STIRRER.read_text().replace("poll: 30 s", "poll: 1 s")
    path = tmp_path / "stirrer.yaml"
    path.write_text(text.replace("budget: {trials: 14", "budget: {trials: 2"))
    # An emulated minute is a wall millisecond: each anneal takes 5 to 60 ms of waiting.
    with emulator_process(f"--protocol={path}", "--time-scale", "60000") as pty:
        done = subprocess.run([sys.executable, "-m", "closedloop", "run", str(path), "--port", pty,
                               "--db", str(tmp_path / "c.sqlite")], capture_output=True, text=True, timeout=200,
                              cwd=paths.ROOT)
    assert done.returncode == 0, done.stderr
    assert "stopped: budget: 2 of 2 trials done" in done.stdout + done.stderr
    assert "viscosity_trend=" in done.stdout + done.stderr


def test_a_dry_run_runs_against_a_pyvisa_sim_file_through_the_visa_link(tmp_path: Path) -> None:
    text = STIRRER.read_text()
    path = tmp_path / "stirrer.yaml"
    simulate = '  simulate: {pyvisa_sim: sim.yaml, resource: "ASRL1::INSTR"}\n\n'
    path.write_text(text[: text.index("  simulate:")] + simulate + text[text.index("planner:"):])
    (tmp_path / "sim.yaml").write_text((paths.PROTOCOLS / "sim" / "hotplate_stirrer.yaml").read_text())
    report = dry_run(path, scratch_dir=tmp_path / "scratch")
    assert report.exit_code == 0
    assert "the pyvisa-sim file sim.yaml, visa://ASRL1::INSTR" in report.instrument
    [db] = (tmp_path / "scratch").glob("*.sqlite")
    store = CampaignStore.open(db)
    try:
        replies = [c["text"] for c in store.commands() if c["direction"] == "rx"]
    finally:
        store.close()
    assert "HS-7 v2.1 (pyvisa-sim)" in replies and "42.00 5" in replies


def test_a_missing_pyvisa_sim_file_is_named(tmp_path: Path) -> None:
    text = STIRRER.read_text()
    path = tmp_path / "stirrer.yaml"
    simulate = '  simulate: {pyvisa_sim: nowhere.yaml, resource: "ASRL1::INSTR"}\n\n'
    path.write_text(text[: text.index("  simulate:")] + simulate + text[text.index("planner:"):])
    result = CliRunner().invoke(main, ["validate", "--dry-run", str(path)])
    assert result.exit_code == 2 and "nowhere.yaml" in result.output and "Traceback" not in result.output
