"""`closedloop emulate mbe --modbus-tcp 0`: the chamber's heater loops as Eurotherm controllers on a real
Modbus TCP port beside the growth controller's line, one chamber behind both, in its own process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.modbus_controller import ModbusController
from tests import paths


def test_one_chamber_behind_the_line_and_the_modbus_port(tmp_path: Path) -> None:
    record = tmp_path / "chamber.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "emulate", "mbe", "--tcp", "0", "--modbus-tcp", "0",
         "--time-scale", "3600", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT)
    try:
        assert process.stdout is not None
        line, modbus = process.stdout.readline(), process.stdout.readline()
        assert line.startswith("listening on socket://127.0.0.1:"), line + process.stderr.read()
        assert modbus.startswith("modbus listening on modbus+tcp://127.0.0.1:") and "unit 2 RU_CELL" in modbus
        base = modbus.split()[3]
        ru = ModbusController(f"{base}?unit=2", MBE_ENVELOPE.limits["ru_cell_temp"], name="RU_CELL")
        ru.write_ramp_rate(10.0)
        ru.write_setpoint(1877.0)
        started = time.monotonic()
        # The growth controller's line sees the setpoint written over Modbus: the same loop.
        link = serial.serial_for_url(line.split()[-1], timeout=2)
        link.write(b"RU_CELL:SP?\n")
        assert link.readline() == b"1877.00\r\n"
        time.sleep(0.3)  # 18 emulated minutes at least: the ramp has climbed 180 degC or more
        climbed = ru.read_working_setpoint() - 1200.0
        elapsed_min = (time.monotonic() - started) * 60.0
        assert 180.0 <= climbed <= 10.0 * elapsed_min + 1.0
        taken = [json.loads(r) for r in record.read_text().splitlines()]
        assert [(r["device"], r["field"], r["value"]) for r in taken] == [("RU_CELL", "RATE", 10.0), ("RU_CELL", "SP", 1877.0)]
        ru.close()
        link.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, process.stderr.read() if process.stderr else ""


def test_the_loops_on_modbus_rtu_over_a_pseudo_terminal() -> None:
    process = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", "mbe", "--pty", "--modbus-rtu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT)
    try:
        assert process.stdout is not None
        line, modbus = process.stdout.readline(), process.stdout.readline()
        assert line.startswith("listening on /dev/") and modbus.startswith("modbus listening on modbus+rtu:///dev/")
        sr = ModbusController(f"{modbus.split()[3]}?unit=1", MBE_ENVELOPE.limits["sr_cell_temp"], name="SR_CELL")
        assert abs(sr.read_process_value() - 300.0) < 3.0 and sr.read_target_setpoint() == 300.0  # idle
        sr.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, process.stderr.read() if process.stderr else ""


@pytest.mark.parametrize(("args", "message"), [
    (["furnace", "--modbus-tcp", "0"], "give the one MODEL mbe"),
    (["mbe", "--modbus-tcp", "0", "--modbus-rtu"], "choose one of --modbus-tcp PORT and --modbus-rtu"),
])
def test_modbus_serves_only_the_mbe_chamber_one_way(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["emulate", *args])
    assert result.exit_code == 2 and message in result.output
