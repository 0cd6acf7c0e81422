"""The serial and TRMC drivers over visa:// links, unchanged: the example furnace protocol against the
pyvisa-sim furnace file, and both drivers against their emulators on a pty or TCP port through
pyvisa-py, with journals identical to the ones the plain serial/socket links record."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from closedloop.controller.engine.clock import VirtualClock, WallClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.drivers.trmc_driver import TrmcDriver
from closedloop.drivers.visa_port import VisaPort
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock, TcpServer
from closedloop.simulators.faults import FaultInjector
from closedloop.simulators.furnace import FurnaceModel, sheet_resistance
from closedloop.simulators.trmc.wire import TrmcWireModel
from tests import paths

SIM_URL = "visa://ASRL1::INSTR?sim=simulators/visa/furnace.yaml"  # relative: the tests run it from the root
CONDITIONS = {"anneal_temp": 300.0, "anneal_time": 30.0, "gas_flow": 50.0}
GOOD_FILM = {"acceptor_fraction": 0.5, "anneal_temp": 140.0, "anneal_time": 10.0, "spin_speed": 2000,
             "solvent": "chlorobenzene"}
# Emulated time runs so fast that every anneal or acquisition is over by the next poll: a trial's
# exchanges then do not depend on wall-clock timing, so two links must journal exactly the same lines.
INSTANT = 1e9


class Journal(list[tuple[str, str]]):
    def __call__(self, direction: str, text: str) -> None:
        self.append((direction, text))

    def sent(self) -> list[str]:
        return [text for direction, text in self if direction == "tx"]


def protocol_section(**changes: Any) -> dict[str, Any]:
    """The instrument section of protocols/serial_furnace.yaml, as the protocol file has it."""
    section = dict(YAML(typ="safe").load((paths.PROTOCOLS / "serial_furnace.yaml").read_text())["instrument"])
    section.update(changes)
    return section


def furnace_driver(connection: str, **changes: Any) -> SerialInstrumentDriver:
    return SerialInstrumentDriver(SerialInstrumentConfig.model_validate(protocol_section(connection=connection, **changes)))


def run(driver: Any, conditions: dict[str, Any], clock: Any) -> tuple[Any, Journal]:
    """One trial on a fresh journal (kept as `driver.transport_journal`, for trials that raise)."""
    journal = driver.transport_journal = Journal()
    try:
        return driver.run(conditions, InstrumentContext(clock=clock, trial_id=1, journal=journal)), journal
    finally:
        driver.close()


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(paths.ROOT)
    return paths.ROOT


def test_the_example_protocol_runs_a_trial_through_pyvisa_sim(at_root: Path) -> None:
    driver = furnace_driver(SIM_URL)
    assert isinstance(driver.transport._port, VisaPort)
    measurement, journal = run(driver, CONDITIONS, VirtualClock())
    assert measurement.status == "ok"
    assert measurement.values == {"sheet_resistance": 42.0}  # the sim file's fixed reading
    assert measurement.instrument == "KILNCO,TF-1200,SIM-VISA,1.0"
    sent = journal.sent()
    assert sent[sent.index("*CLS"):] == [
        "*CLS", "SYST:ERR?", "ABOR", "SYST:ERR?", "SYST:REM", "SYST:ERR?", "SOUR:TEMP 300.0", "SYST:ERR?",
        "SOUR:DWEL 1800", "SYST:ERR?", "SOUR:FLOW 50.0", "SYST:ERR?", "INIT", "SYST:ERR?", "STAT:OPER?",
        "FETC:RES?", "SYST:ERR?",
    ]
    assert ("rx", "4.200000E+01") in journal


def test_an_out_of_envelope_setpoint_is_refused_before_anything_is_written(at_root: Path) -> None:
    driver = furnace_driver(SIM_URL)
    with pytest.raises(EnvelopeViolation, match="anneal_temp") as info:
        run(driver, {**CONDITIONS, "anneal_temp": 500.0}, VirtualClock())
    assert info.value.parameter == "anneal_temp"
    assert driver.transport.connections == 0  # the link was not even opened
    journal = Journal()
    with pytest.raises(EnvelopeViolation):
        driver.run({**CONDITIONS, "gas_flow": 900.0}, InstrumentContext(clock=VirtualClock(), trial_id=2, journal=journal))
    assert journal.sent() == []


def test_an_unanswered_measurement_is_a_fault_after_the_timeouts_and_no_set_is_repeated(at_root: Path) -> None:
    driver = furnace_driver(SIM_URL, serial={"terminator": "\n", "timeout": "0.2 s", "retry_backoff": "0.01 s"},
                            measure={"sheet_resistance": {"query": "MEAS:TEMP?", "parse": "float", "unit": "ohm"}})
    start = time.monotonic()
    with pytest.raises(InstrumentFault, match=r"no usable reply to 'MEAS:TEMP\?'.*within 0.2 s \(tried 3 times\)"):
        measurement, journal = run(driver, CONDITIONS, VirtualClock())
    assert 0.6 <= time.monotonic() - start < 3.0  # the sim file never answers MEAS:TEMP?: three 0.2 s timeouts
    tx = driver.transport_journal.sent()
    assert tx.count("MEAS:TEMP?") == 3  # an idempotent query: one try and two retries
    assert [tx.count(c) for c in ("SOUR:TEMP 300.0", "SOUR:DWEL 1800", "SOUR:FLOW 50.0", "INIT")] == [1, 1, 1, 1]


def test_the_serial_driver_over_a_pty_journals_the_same_through_visa() -> None:
    journals, values = [], []
    for visa in (False, True):
        device = Device(FurnaceModel(ScaledClock(INSTANT), seed=4))
        with PtyServer(device) as server:
            url = f"visa://ASRL{server.path}::INSTR" if visa else server.path
            wait = {"query": "STAT:OPER?", "until": "^IDLE", "poll": "0.01 s", "timeout": "5 s"}
            measurement, journal = run(furnace_driver(url, wait=wait), CONDITIONS, WallClock())
        journals.append(journal)
        values.append(measurement.values["sheet_resistance"])
    assert values[0] == values[1] == pytest.approx(sheet_resistance(300.0, 30.0, 50.0), rel=0.1)
    assert journals[0] == journals[1]
    assert len(journals[1]) > 20


def test_the_trmc_driver_over_tcp_journals_the_same_through_visa() -> None:
    """The TRMC's binary record (an IEEE-488.2 block) read through pyvisa-py's raw socket resource."""
    results = []
    for visa in (False, True):
        with TcpServer(Device(TrmcWireModel(ScaledClock(INSTANT), seed=5))) as server:
            url = f"visa://TCPIP::127.0.0.1::{server.port}::SOCKET" if visa else server.url
            results.append(run(TrmcDriver(url, {"timeout": 1.0, "poll_s": 2.0}), GOOD_FILM, ScaledClock(INSTANT)))
    (plain, plain_journal), (over_visa, visa_journal) = results
    assert over_visa.status == plain.status == "ok"
    np.testing.assert_array_equal(over_visa.artifacts["dPr_over_Pr"], plain.artifacts["dPr_over_Pr"])
    assert over_visa.values == plain.values
    assert visa_journal == plain_journal
    assert any(text.startswith("[binary block: ") for _, text in visa_journal)


@pytest.mark.slow
def test_emulate_cli_serves_the_trmc_on_tcp_for_a_visa_socket_link() -> None:
    """`closedloop emulate trmc --tcp 0` in its own process, reached as a VISA TCPIP SOCKET resource."""
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "emulate", "trmc", "--tcp", "0", "--seed", "3", "--time-scale", "7200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on socket://127.0.0.1:"), first + (process.stderr.read() if process.poll() else "")
        port = int(first.rsplit(":", 1)[1])
        driver = TrmcDriver(f"visa://TCPIP::127.0.0.1::{port}::SOCKET", {"timeout": 1.0, "poll_s": 2.0, "opc_margin_s": 600.0})
        measurement, journal = run(driver, GOOD_FILM, ScaledClock(7200.0))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert measurement.status == "ok"
    assert measurement.instrument.startswith("CLOSEDLOOP,TRMC-SIM")
    assert 0 < measurement.values["phi_sum_mu_max"] < 1
    assert "CURV?" in journal.sent()


def test_a_dropped_tcp_link_is_reopened_through_visa_and_the_next_trial_runs() -> None:
    """pyvisa-py hears a closed socket as silence, so the loss shows on the next write (a broken pipe):
    the transport reconnects, abandons the trial, and the next one measures."""
    device = Device(FurnaceModel(ScaledClock(INSTANT), seed=0), faults=FaultInjector("unplug:once@6", unplug_s=0.3))
    with TcpServer(device) as server:
        driver = furnace_driver(f"visa://TCPIP::127.0.0.1::{server.port}::SOCKET",
                                wait={"query": "STAT:OPER?", "until": "^IDLE", "poll": "0.01 s", "timeout": "5 s"},
                                serial={"terminator": "\n", "timeout": "0.3 s", "reconnect_backoff": "0.1 s"})
        journal = Journal()
        with pytest.raises(InstrumentFault):
            driver.run(CONDITIONS, InstrumentContext(clock=WallClock(), trial_id=1, journal=journal))
        assert driver.transport.reconnects == 1
        assert ("rx", "[link re-established]") in journal
        time.sleep(0.4)  # the emulator listens again after its unplug time
        measurement, _ = run(driver, CONDITIONS, WallClock())
    assert measurement.status == "ok"
    assert measurement.values["sheet_resistance"] == pytest.approx(sheet_resistance(300.0, 30.0, 50.0), rel=0.1)
