"""The MBE growth controller's wire emulator: each command against the chamber physics it drives, in
process through the emulator framework (the same `Device` framing a pty or TCP server uses)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from closedloop.controller.engine.clock import StationClock
from closedloop.simulators.emulator import EmulatedPort, ScaledClock
from closedloop.simulators.mbe.chamber import IDLE_CELSIUS, SR_CELL
from closedloop.simulators.mbe.wire import IDN, MbeWireModel, WireRecord
from closedloop.simulators.registry import EMULATORS, in_process_port, make_model


class Wire:
    """Raw lines to the emulator on a virtual clock, replies back without terminators."""

    def __init__(self, seed: int = 0) -> None:
        self.port: EmulatedPort = in_process_port("mbe", seed=seed)
        self.clock = StationClock(0.0)
        self.port.follow_clock(self.clock)
        self.port.open()

    @property
    def model(self) -> MbeWireModel:
        return self.port.device.model  # type: ignore[return-value]

    def send(self, line: str) -> bytes:
        self.port.write(line.encode() + b"\n")
        return self.port.read(1 << 20)

    def ask(self, line: str) -> str:
        return self.send(line).decode().removesuffix("\r\n")


def test_registered_as_an_emulated_model_and_identifies_itself() -> None:
    assert EMULATORS["mbe"].driver == "mbe"
    assert isinstance(make_model("mbe", ScaledClock()), MbeWireModel)
    wire = Wire()
    assert wire.ask("*IDN?") == IDN
    assert wire.ask("SYST:ERR?") == '0,"No error"'
    assert wire.send("FOO:BAR 1") == b""
    assert wire.ask("SYST:ERR?").startswith("-113,")


def test_a_setpoint_ramps_at_the_rate_last_set_and_everything_is_recorded() -> None:
    wire = Wire()
    start = IDLE_CELSIUS["sr_cell_temp"]
    assert float(wire.ask("SR_CELL:PV?")) == pytest.approx(start, abs=3)
    wire.send("SR_CELL:RATE 10")
    wire.send("SR_CELL:SP 400")
    assert float(wire.ask("SR_CELL:SP?")) == 400.0 and float(wire.ask("SR_CELL:RATE?")) == 10.0
    wire.clock.sleep(300)  # 5 min at 10 degC/min: the working setpoint is at 350, the PV lags ~40 s behind
    assert float(wire.ask("SR_CELL:PV?")) == pytest.approx(start + 50 - 10 / 60 * 40, abs=3)
    assert 0 < float(wire.ask("SR_CELL:OP?")) <= 100
    wire.clock.sleep(900)
    assert float(wire.ask("SR_CELL:PV?")) == pytest.approx(400, abs=2)
    assert wire.model.record == [WireRecord(0.0, "SR_CELL", "RATE", 10.0), WireRecord(0.0, "SR_CELL", "SP", 400.0)]


def test_it_refuses_nothing_a_driver_sends_so_tests_can_see_it() -> None:
    wire = Wire()
    wire.send("RU_CELL:RATE 500")  # far above any safe rate
    wire.send("RU_CELL:SP 2600")  # above the cell's maximum
    wire.send("SHUT:MAIN OPEN")
    assert [(r.device, r.field, r.value) for r in wire.model.record] == [
        ("RU_CELL", "RATE", 500.0), ("RU_CELL", "SP", 2600.0), ("SHUT:MAIN", "STATE", "OPEN")]
    assert wire.ask("SYST:ERR?") == '0,"No error"'
    wire.clock.sleep(60)
    assert float(wire.ask("RU_CELL:PV?")) > 1300  # 500 degC/min really happened (5 would give ~1205)


def test_shutters_flux_monitor_pressure_and_interlock() -> None:
    wire = Wire()
    assert wire.ask("SHUT:SR?") == "CLOS"
    assert wire.ask("BFM:READ?") == "9.91E+37" and wire.ask("SYST:ERR?").startswith("-221,")
    wire.send("BFM IN")
    background = np.mean([float(wire.ask("BFM:READ?")) for _ in range(20)])
    wire.send("SHUT:SR OPEN")
    assert wire.ask("SHUT:SR?") == "OPEN"
    beam = np.mean([float(wire.ask("BFM:READ?")) for _ in range(20)]) - background
    assert beam == pytest.approx(SR_CELL.bep(IDLE_CELSIUS["sr_cell_temp"]), rel=0.03)
    base = float(wire.ask("PRES?"))
    wire.send("OZONE:FLOW 4")
    assert float(wire.ask("OZONE:FLOW?")) == 4.0 and float(wire.ask("PRES?")) > base + 5e-6
    assert wire.ask("ILCK?") == "OK"
    wire.model.chamber.burst_torr = 2e-4  # a flake on a hot cell
    assert wire.ask("ILCK?") == "TRIPPED"
    wire.send("SHUT:SR MAYBE")
    assert wire.ask("SYST:ERR?").startswith("-224,")


def _grow(wire: Wire, seconds: float) -> None:
    for ctrl, rate, target in (("SR_CELL", 20, 470), ("RU_CELL", 10, 1877), ("SUBSTRATE", 30, 758)):
        wire.send(f"{ctrl}:RATE {rate}")
        wire.send(f"{ctrl}:SP {target}")
    wire.clock.sleep(6 * 3600)
    wire.send("OZONE:FLOW 6")
    for shutter in ("SR", "RU", "MAIN"):
        wire.send(f"SHUT:{shutter} OPEN")
    wire.send(f"RHEED:CAPT {min(seconds, 600):g}")
    wire.clock.sleep(seconds)
    for shutter in ("SR", "RU", "MAIN"):
        wire.send(f"SHUT:{shutter} CLOS")


def test_rheed_oscillates_once_per_monolayer_and_ex_situ_follows_the_growth() -> None:
    wire = Wire(seed=3)
    assert wire.ask("GROW:MEAS?") == "NONE" and wire.ask("SYST:ERR?").startswith("-230,")
    _grow(wire, 3600)
    block = wire.send("RHEED:DATA?")
    digits = int(block[1:2])
    length = int(block[2 : 2 + digits])
    intensity = np.array(struct.unpack(f"<{length // 4}f", block[2 + digits : 2 + digits + length]))
    assert len(intensity) == 600 * float(wire.ask("RHEED:RATE?"))
    csv = np.array([float(v) for v in wire.ask("RHEED:DATA:CSV?").split(",")])
    np.testing.assert_allclose(csv, intensity, atol=1e-4)
    assert np.ptp(intensity) > 0.5  # strong oscillations at these (near-optimal) conditions
    results = dict(part.split("=") for part in wire.ask("GROW:MEAS?").split(";"))
    assert results["PHASE"] == "SrRuO3" and 60 < float(results["RRR"]) < 90
    assert 0.15 < float(results["RATE"]) < 0.35 and float(results["FWHM"]) < 0.05


def test_a_wrong_phase_film_has_no_rrr() -> None:
    wire = Wire()
    wire.send("SUBSTRATE:RATE 30")
    wire.send("SUBSTRATE:SP 450")  # too cold for epitaxy
    wire.clock.sleep(3600)
    for shutter in ("SR", "RU", "MAIN"):
        wire.send(f"SHUT:{shutter} OPEN")
    wire.clock.sleep(600)
    wire.send("SHUT:MAIN CLOS")
    results = dict(part.split("=") for part in wire.ask("GROW:MEAS?").split(";"))
    assert results["PHASE"].startswith("wrong phase") and math.isnan(float(results["RRR"]))


def test_a_rheed_capture_is_not_readable_before_it_has_finished() -> None:
    wire = Wire()
    wire.send("RHEED:CAPT 60")
    wire.clock.sleep(30)
    assert wire.send("RHEED:DATA?") == b"#10\r\n" and wire.ask("SYST:ERR?").startswith("-230,")
    wire.clock.sleep(31)
    assert len(wire.ask("RHEED:DATA:CSV?").split(",")) == 300
