"""The MBE driver with cells on their own Modbus controllers: the chamber's wire emulator in process
(virtual time) and the same chamber's heater loops behind a real pymodbus server on 127.0.0.1, so what
the growth physics sees is what was set through Modbus. Asserted on the chamber's record of what it
took, on its registers, and on the journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.drivers.base import EnvelopeViolation, InstrumentFault
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.mbe_driver import MbeDriver
from closedloop.drivers.modbus_controller import ALARM_1_SP, AUTO_MANUAL, ModbusController
from closedloop.simulators.modbus_controller import ModbusEmulator, mbe_rack
from tests import paths
from tests.drivers.test_mbe_driver import FAST, GOOD, Rig, assert_record_inside_envelope


class ModbusRig(Rig):
    """The driver on the in-process MBE emulator, with the Sr cell (float32) and the Ru cell (scaled)
    on the Modbus server of the same chamber."""

    def __init__(self, seed: int = 0, **options: object) -> None:
        super().__init__(seed)
        self.server = ModbusEmulator(mbe_rack(self.model)).start_tcp()
        self.cells = {"sr_cell_temp": {"modbus": self.server.url(1), "encoding": "float32"},
                      "ru_cell_temp": {"modbus": self.server.url(2), "decimals": 1}}
        self.driver = MbeDriver("sim://mbe", {**FAST, "cells": self.cells, **options}, port=self.port)

    def operator(self, unit: int) -> ModbusController:
        """A second Modbus master on the same controller: the lab's HMI, an operator's laptop."""
        heater = {1: "sr_cell_temp", 2: "ru_cell_temp"}[unit]
        return ModbusController(self.server.url(unit), MBE_ENVELOPE.limits[heater], name="HMI")


@pytest.fixture
def rig() -> Iterator[ModbusRig]:
    r = ModbusRig(seed=1)
    yield r
    r.driver.close()
    r.server.close()


def test_a_growth_sets_the_cells_through_modbus_and_the_film_comes_from_those_temperatures(rig: ModbusRig) -> None:
    m = rig.driver.run(GOOD, rig.ctx)
    assert m.status == "ok" and 60 < m.values["rrr"] < 90 and m.values["xrd_fwhm"] < 0.05
    sent = [t for d, t in rig.journal if d == "tx"]
    # The cells over Modbus (rate limit first, then the setpoint), the substrate over the growth controller's line.
    assert sent.index("RU_CELL unit 2 WRITE 35 [100]") < sent.index("RU_CELL unit 2 WRITE 2 [18770]")
    assert "SR_CELL unit 1 WRITE 32838 [16800, 0]" in sent  # 20.0 degC/min as a float at 0x8000 + 2*35
    assert not any(t.startswith(("RU_CELL:", "SR_CELL:")) for t in sent)
    assert "SUBSTRATE:SP 758.0" in sent
    # What the chamber took: the Modbus writes are in its record like any command, inside the envelope.
    ru = [(r.field, r.value) for r in rig.record if r.device == "RU_CELL"]
    assert ru[:2] == [("RATE", 10.0), ("SP", 1877.0)] and ru[-1] == ("SP", 1200.0)  # back to idle at the end
    assert_record_inside_envelope(rig.record)
    # The controller's registers were read back after each setpoint, and its alarms polled while growing.
    assert sent.count("RU_CELL unit 2 READ 294 x1") > 10
    assert rig.model.chamber.controllers["ru_cell_temp"].target == 1200.0


@pytest.mark.parametrize(("heater", "target", "rate", "reason"), [
    ("ru_cell_temp", 2100.0, 10.0, "above the maximum 2000"),
    ("ru_cell_temp", 1850.0, 12.0, "max_rate 10"),
    ("sr_cell_temp", 450.0, 0.0, "must be > 0"),
])
def test_unsafe_setpoints_for_modbus_cells_are_refused_before_any_request(
        rig: ModbusRig, heater: str, target: float, rate: float, reason: str) -> None:
    with pytest.raises(EnvelopeViolation, match=reason):
        rig.driver.set_temperature(heater, target, rate, rig.ctx)
    assert rig.record == []
    assert [d for d, _ in rig.journal] == ["tx"] and "REFUSED" in rig.journal[0][1]
    assert rig.operator(2).read_target_setpoint() == 1200.0  # the register over the wire


def test_an_alarm_while_heating_faults_and_ramps_everything_back_to_idle(rig: ModbusRig) -> None:
    hmi = rig.operator(2)
    hmi._request("write", ALARM_1_SP, values=[18600])  # high alarm at 1860 degC, below this growth's 1877
    with pytest.raises(InstrumentFault, match=r"RU_CELL's Modbus controller .* high alarm \(alarm 1\) is active"):
        rig.driver.run(GOOD, rig.ctx)
    after = rig.record[[r.field for r in rig.record].index("STATE"):]  # from the first shutter command on
    assert ("RU_CELL", "SP", 1200.0) in [(r.device, r.field, r.value) for r in after]
    assert rig.model.chamber.controllers["ru_cell_temp"].target == 1200.0
    assert rig.model.chamber.controllers["sr_cell_temp"].target == 300.0
    assert all(not s.is_open for s in rig.model.chamber.shutters.values()) and rig.model.chamber.ozone_sccm == 0.0
    assert "SHUT:MAIN OPEN" not in [t for d, t in rig.journal if d == "tx"]  # never grew


def test_a_loop_in_manual_is_refused_right_after_its_setpoint(rig: ModbusRig) -> None:
    rig.operator(1)._request("write", AUTO_MANUAL, values=[1])
    with pytest.raises(InstrumentFault, match="SR_CELL's Modbus controller .* manual mode"):
        rig.driver.set_temperature("sr_cell_temp", 470.0, 10.0, rig.ctx)
    sr = [(r.field, r.value) for r in rig.record if r.device == "SR_CELL"]
    assert sr == [("RATE", 10.0), ("SP", 470.0), ("RATE", 20.0), ("SP", 300.0)]  # set, then the safe state's idle


def test_a_decimals_mismatch_shows_as_a_working_setpoint_off_the_envelope(rig: ModbusRig) -> None:
    # The driver believes the Ru controller has no decimals; it has one: 1877 goes out as 187.7 degC.
    wrong = {**rig.cells, "ru_cell_temp": {"modbus": rig.server.url(2), "decimals": 0}}
    driver = MbeDriver("sim://mbe", {**FAST, "cells": wrong}, port=rig.port)
    with pytest.raises(InstrumentFault, match="working setpoint 12000 is outside the envelope"):
        driver.set_temperature("ru_cell_temp", 1877.0, 10.0, rig.ctx)
    assert rig.model.chamber.controllers["ru_cell_temp"].target < 1200.0  # heading for idle, not hotter
    driver.close()


def test_abort_puts_modbus_cells_to_idle_at_rates_inside_the_envelope(rig: ModbusRig) -> None:
    rig.driver.set_temperature("ru_cell_temp", 1877.0, 10.0, rig.ctx)
    rig.driver.set_temperature("sr_cell_temp", 250.0, 10.0, rig.ctx)  # below idle: an abort must not heat it
    rig.driver.abort()
    ru = [(r.field, r.value) for r in rig.record if r.device == "RU_CELL"]
    assert ru == [("RATE", 10.0), ("SP", 1877.0), ("RATE", 10.0), ("SP", 1200.0)]
    assert [r.value for r in rig.record if r.device == "SR_CELL"] == [10.0, 250.0]
    with pytest.raises(InstrumentFault, match="aborted by the operator"):
        rig.driver.wait_until_stable(["ru_cell_temp"], rig.ctx)


def test_a_loop_switched_to_manual_while_the_film_grows_ends_the_growth_safely(rig: ModbusRig) -> None:
    hmi = rig.operator(2)

    def journal(direction: str, text: str) -> None:
        rig.journal.append((direction, text))
        if text == "SHUT:MAIN OPEN":  # the film starts growing: someone takes the Ru loop into manual
            hmi._request("write", AUTO_MANUAL, values=[1])

    rig.ctx.journal = journal
    with pytest.raises(InstrumentFault, match="RU_CELL's Modbus controller .* manual mode"):
        rig.driver.run(GOOD, rig.ctx)
    sent = [t for d, t in rig.journal if d == "tx"]
    opened = sent.index("SHUT:MAIN OPEN")
    assert "SHUT:MAIN CLOS" in sent[opened:] and "OZONE:FLOW 0" in sent[opened:] and "GROW:MEAS?" not in sent
    assert rig.model.chamber.controllers["ru_cell_temp"].target == 1200.0  # idle, through Modbus
    assert all(not s.is_open for s in rig.model.chamber.shutters.values()) and rig.model.chamber.ozone_sccm == 0.0


@pytest.mark.parametrize(("cells", "message"), [
    ('{ru_cell_temp: {modbus: "tcp://127.0.0.1:5020"}}',
     "30:44: instrument.options.cells.ru_cell_temp.modbus: modbus connection 'tcp://127.0.0.1:5020': unknown "
     "scheme 'tcp'; write modbus+tcp://HOST:PORT?unit=N"),
    ('{ga_cell_temp: {modbus: "modbus+tcp://127.0.0.1:5020?unit=1"}}', "unknown heater(s) ['ga_cell_temp']"),
    ('{ru_cell_temp: {modbus: "modbus+tcp://127.0.0.1:5020?unit=2", decimals: 5}}', "decimals"),
])
def test_a_bad_cell_in_a_protocol_is_refused_at_validate_with_where_and_what_to_write(
        tmp_path: Path, cells: str, message: str) -> None:
    text = (paths.PROTOCOLS / "mbe_srruo3.yaml").read_text()
    protocol = tmp_path / "mbe.yaml"
    protocol.write_text(text.replace("  connection: sim://mbe ", f"  options: {{cells: {cells}}}\n  connection: sim://mbe "))
    result = CliRunner().invoke(main, ["validate", str(protocol)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
