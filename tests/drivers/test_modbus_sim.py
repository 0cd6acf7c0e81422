"""Modbus cells in process: a protocol whose Sr and Ru cells are on Eurotherm controllers over Modbus
dry-runs (`validate --dry-run`) and runs simulated (`run --sim`) exactly as written for the lab, its cells
answered by register banks on the `sim://mbe` chamber (simulators/modbus_bank.py) in virtual time, with no
socket: a listener at the cells' address sees no connection. The bank answers as the TCP emulator does
(journal lines, refusals and exception replies equal), and a port a test builds itself keeps the wire."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.dryrun import fold_transcript
from closedloop.controller.cli.main import main
from closedloop.controller.dryrun.checks import ramp_seconds
from closedloop.controller.dryrun.run import dry_run
from closedloop.controller.engine.clock import StationClock
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.mbe_driver import MbeDriver
from closedloop.drivers.modbus_client import in_process_controllers
from closedloop.drivers.modbus_controller import PV, RAMP_RATE, ModbusController
from closedloop.drivers.modbus_url import parse_modbus_url
from closedloop.drivers.transport import TransportSettings, open_port
from closedloop.simulators.emulator import EmulatedPort, FollowedClock
from closedloop.simulators.mbe.wire import MbeWireModel, WireRecord
from closedloop.simulators.modbus_controller import LockedModel, ModbusEmulator, mbe_rack
from tests.controller.dryrun.test_dry_run import small_mbe
from tests.drivers.test_mbe_driver import FAST, GOOD, assert_record_inside_envelope
from tests.drivers.test_modbus_mbe import ModbusRig

RU = MBE_ENVELOPE.limits["ru_cell_temp"]
LINE = TransportSettings(read_terminator="\r\n", write_terminator="\n")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 nobody should connect to: the cells' URLs name it."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_nobody_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


def cells_protocol(folder: Path, port: int, **budget: int) -> Path:
    """The example MBE protocol as a lab runs it live: the growth controller on its serial bridge and the
    cells on Modbus TCP (Sr as floats), on a small budget."""
    cells = (f'\n  options:\n    cells:\n      ru_cell_temp: {{modbus: "modbus+tcp://127.0.0.1:{port}?unit=2"}}'
             f'\n      sr_cell_temp: {{modbus: "modbus+tcp://127.0.0.1:{port}?unit=1", encoding: float32}}\n')
    return small_mbe(folder, ("  connection: sim://mbe ", "  connection: socket://mbe-ctl.invalid:4001 "),
                     ("# live: the growth controller's serial bridge, e.g. socket://mbe-ctl:4001\n", cells), **budget)


@pytest.mark.slow
def test_a_protocol_with_modbus_cells_dry_runs_safely_in_virtual_time_with_its_cells_in_process(
        tmp_path: Path, listener: socket.socket) -> None:
    protocol = cells_protocol(tmp_path, listener.getsockname()[1], trials=3, initial=3)
    report = dry_run(protocol)
    assert report.exit_code == 0, report.problems
    assert report.instrument == ("in-process simulator (sim://mbe, with Modbus cells ru_cell_temp and sr_cell_temp "
                                 "simulated in process)")
    assert sum(report.states.values()) == 3 and not any("fault" in state for state in report.states)
    # Hours of growth in virtual time, seconds of wall time; the ramps are seen through the Modbus polls.
    assert report.instrument_time_s > 3 * 3600 and report.dry_run_wall_s < 0.05 * report.instrument_time_s
    assert 0.1 * report.instrument_time_s < report.ramp_time_s < 0.5 * report.instrument_time_s
    lines = [(x["direction"], x["text"]) for x in report.transcript]
    sent = [text for direction, text in lines if direction == "tx"]
    ru_sp = next(s for s in sent if s.startswith("RU_CELL unit 2 WRITE 2 "))  # one decimal: [18xxx]
    assert sent.index("RU_CELL unit 2 WRITE 35 [100]") < sent.index(ru_sp)  # 10 degC/min first
    assert ("rx", f"RU_CELL unit 2 2 = {ru_sp.rsplit(' ', 1)[1]}") in lines  # the setpoint, read back
    assert "SR_CELL unit 1 WRITE 32838 [16800, 0]" in sent  # 20 degC/min as a float at 0x8000 + 2 * 35
    assert "RU_CELL unit 2 READ 294 x1" in sent and ("rx", "RU_CELL unit 2 294 = [0]") in lines  # alarm polled
    assert not any(s.startswith(("RU_CELL:", "SR_CELL:")) for s in sent) and "SUBSTRATE:SP?" in sent
    # Printed, a poll of every loop (the cells' 14 register reads, the substrate's PV and SP) is one block.
    folded = fold_transcript(report.transcript)
    assert any("the 16 commands above sent" in line for line in folded) and len(folded) < len(sent) / 10
    assert_nobody_connected(listener)


@pytest.mark.slow
def test_run_sim_runs_the_modbus_protocol_and_journals_its_modbus_requests(tmp_path: Path, listener: socket.socket) -> None:
    protocol = cells_protocol(tmp_path, listener.getsockname()[1], trials=2, initial=2)
    protocol.write_text(protocol.read_text().replace("  mode: outside_region", "  mode: none"))
    db = tmp_path / "srruo3.sqlite"
    result = CliRunner().invoke(main, ["run", str(protocol), "--sim", "--db", str(db), "--quiet", "--no-report"])
    assert result.exit_code == 0, result.output
    with CampaignStore.open(db) as store:
        trials = store.trials()
        assert len(trials) == 2 and {t.state for t in trials} <= {"measured", "failed"}
        for trial in trials:
            journal = [(c["direction"], c["text"]) for c in store.commands(trial.id)]
            ru = f"[{round(trial.conditions['ru_cell_temp'] * 10)}]"
            assert ("tx", f"RU_CELL unit 2 WRITE 2 {ru}") in journal and ("rx", f"RU_CELL unit 2 2 = {ru}") in journal
            assert ("rx", "SR_CELL unit 1 32838 = [16800, 0]") in journal
    assert_nobody_connected(listener)


def test_two_heaters_on_one_controller_are_refused_at_validate(tmp_path: Path) -> None:
    # Live they would set each other's setpoint; in process each heater has its own loop, so only
    # validation can catch it.
    protocol = cells_protocol(tmp_path, 5020)
    protocol.write_text(protocol.read_text().replace("unit=1", "unit=2"))
    result = CliRunner().invoke(main, ["validate", str(protocol)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (":32:5: instrument.options.cells: ru_cell_temp and sr_cell_temp name the same controller "
            "(modbus+tcp://127.0.0.1:5020?unit=2); give each heater its own controller") in result.output


def test_ramp_time_counts_the_polls_of_modbus_controllers_too() -> None:
    rows = [("RU_CELL unit 2 WRITE 2 [18770]", 0), ("RU_CELL unit 2 READ 294 x1", 0), ("RU_CELL unit 2 READ 1 x1", 0),
            ("RU_CELL unit 2 READ 294 x1", 15), ("RU_CELL unit 2 READ 1 x1", 15), ("SHUT:SR CLOS", 300),
            ("SR_CELL unit 1 READ 32770 x2", 360)]
    commands = [{"trial_id": 4, "direction": "tx", "text": text, "virtual_t": float(t), "t": 0.0} for text, t in rows]
    assert ramp_seconds(commands, lambda c: c["virtual_t"]) == {4: 15.0}


# -- the bank against the TCP server ----------------------------------------------------------------


def twin_chambers() -> tuple[EmulatedPort, MbeWireModel, ModbusEmulator]:
    """Two chambers in the same state: one behind `sim://mbe` (its controllers in process), one behind a
    real pymodbus server on 127.0.0.1."""
    port = open_port("sim://mbe?seed=2", LINE)
    assert isinstance(port, EmulatedPort)
    served = MbeWireModel(FollowedClock(), seed=2)
    return port, served, ModbusEmulator(mbe_rack(served)).start_tcp()


def exchange(client: ModbusController) -> list[str]:
    """A session with a controller: writes, read-backs, refusals and exception replies; what each raised."""
    outcomes: list[str] = []
    steps: list[Callable[[], object]] = [
        lambda: client.write_ramp_rate(8.0), client.read_ramp_rate, lambda: client.write_setpoint(1877.46),
        client.read_target_setpoint, client.read_working_setpoint, client.read_process_value, client.read_alarms,
        lambda: client.write_setpoint(2000.5), lambda: client.write_ramp_rate(0.0),  # refused: nothing sent
        lambda: client._request("write", PV, values=[12000]),  # read-only: exception 2
        lambda: client._read_raw(1000, 1),  # not in the map: exception 2
        lambda: client._request("write", RAMP_RATE, values=[0xFFF6]),  # -1.0 degC/min: the loop refuses it (3)
    ]
    for step in steps:
        try:
            outcomes.append(repr(step()))
        except (EnvelopeViolation, InstrumentFault) as e:
            outcomes.append(f"{type(e).__name__}: {e}")
    return outcomes


@pytest.mark.parametrize("encoding", ["scaled", "float32"])
def test_the_in_process_bank_answers_exactly_as_the_tcp_server_refusals_included(encoding: str) -> None:
    port, served, server = twin_chambers()
    try:
        url = server.url(2)  # one URL: over the wire, and in process beside the sim:// port
        controllers = in_process_controllers(port)
        assert controllers is not None
        journals: list[list[tuple[str, str]]] = [[], []]
        clients = [ModbusController(url, RU, name="RU_CELL", encoding=encoding),  # type: ignore[arg-type]
                   ModbusController(url, RU, name="RU_CELL", encoding=encoding,  # type: ignore[arg-type]
                                    client=controllers.client(parse_modbus_url(url), "RU_CELL", 1))]
        for client, journal in zip(clients, journals, strict=True):
            client.set_journal(lambda d, t, journal=journal: journal.append((d, t)))
        over_tcp, in_process = exchange(clients[0]), exchange(clients[1])
        assert in_process == over_tcp and journals[1] == journals[0]
        assert "EnvelopeViolation: RU_CELL=2000.5: above the maximum 2000" in in_process[7]
        refused = [line for line in journals[1] if "REFUSED" in line[1]]
        assert refused[0] == ("tx", "RU_CELL REFUSED RU_CELL=2000.5: above the maximum 2000.0 degC")
        assert ("rx", "RU_CELL [exception 3]") in journals[1] and ("rx", "RU_CELL [exception 2]") in journals[1]
        inside = port.device.model
        assert isinstance(inside, LockedModel)
        sp = 1877.5 if encoding == "scaled" else pytest.approx(1877.46, abs=1e-4)  # one decimal, or a float
        assert inside.model.record == served.record == [WireRecord(0.0, "RU_CELL", "RATE", 8.0),
                                                         WireRecord(0.0, "RU_CELL", "SP", sp)]
        for client in clients:
            client.close()
    finally:
        server.close()


# -- the driver ---------------------------------------------------------------------------------------


def test_a_driver_on_sim_mbe_sets_its_modbus_cells_in_process_by_heater_whatever_their_unit() -> None:
    # A lab numbers its controllers its own way; the loop is the heater the protocol names.
    cells = {"ru_cell_temp": {"modbus": "modbus+rtu:///dev/ttyUSB9?unit=7"},
             "sr_cell_temp": {"modbus": "modbus+tcp://mbe-rack.invalid:502?unit=4", "encoding": "float32"}}
    driver = MbeDriver("sim://mbe?seed=1", {**FAST, "cells": cells})
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=StationClock(0.0), trial_id=1, journal=lambda d, t: journal.append((d, t)))
    assert driver.modbus.simulated
    m = driver.run(GOOD, ctx)
    assert m.status == "ok" and 60 < m.values["rrr"] < 90  # the film grew from the temperatures set over Modbus
    sent = [t for d, t in journal if d == "tx"]
    assert "RU_CELL unit 7 WRITE 2 [18770]" in sent and "SR_CELL unit 4 WRITE 32838 [16800, 0]" in sent
    chamber = driver.transport.port.device.model.model
    ru = [(r.field, r.value) for r in chamber.record if r.device == "RU_CELL"]
    assert ru[:2] == [("RATE", 10.0), ("SP", 1877.0)] and ru[-1] == ("SP", 1200.0)
    assert_record_inside_envelope(chamber.record)
    journal.clear()
    with pytest.raises(EnvelopeViolation, match="above the maximum 2000"):
        driver.set_temperature("ru_cell_temp", 2100.0, 10.0, ctx)
    assert [d for d, _ in journal] == ["tx"] and "REFUSED" in journal[0][1]
    assert chamber.chamber.controllers["ru_cell_temp"].target == 1200.0
    driver.close()


def test_a_port_a_test_builds_itself_keeps_its_cells_on_the_wire() -> None:
    rig = ModbusRig(seed=1)
    try:
        assert not rig.driver.modbus.simulated
        rig.driver.set_temperature("ru_cell_temp", 1850.0, 10.0, rig.ctx)
        assert rig.operator(2).read_target_setpoint() == 1850.0  # set on the TCP server's loop
    finally:
        rig.driver.close()
        rig.server.close()
