"""The SMU J-V driver against its emulator: over a real pty (recipe mode and a line's film), served by
`closedloop emulate smu`, refusing out-of-envelope trials before any I/O, and a garbled sweep reply as a
clear InstrumentFault."""

from __future__ import annotations

from typing import Any

import pytest

from closedloop.controller.engine.clock import VirtualClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.jv_analysis import ANALYSIS_NAME
from closedloop.drivers.registry import driver_entry
from closedloop.drivers.smu import SMU_LINE_DESCRIPTION, SmuOptions
from closedloop.drivers.smu_driver import SmuDriver
from closedloop.simulators.device.model import DeviceModel
from closedloop.simulators.device.wire import SmuWireModel
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock
from closedloop.simulators.faults import Emission, FaultInjector
from closedloop.simulators.line.ledger import Anneal, CoatedFilm, FilmLedger
from closedloop.simulators.registry import in_process_port
from tests.emulated import emulator_process

GOOD = {"acceptor_fraction": 0.5, "anneal_temp": 140.0, "anneal_time": 10.0, "spin_speed": 2000, "solvent": "chlorobenzene"}
TIME_SCALE = 7200.0
FAST_LINK = {"timeout": 1.0, "poll_s": 2.0, "opc_margin_s": 600.0}


def context(clock: Any, trial_id: int = 1) -> tuple[InstrumentContext, list[tuple[str, str]]]:
    journal: list[tuple[str, str]] = []
    return InstrumentContext(clock=clock, trial_id=trial_id, journal=lambda d, t: journal.append((d, t))), journal


class GarbledSweep(FaultInjector):
    """The link damages every :FETC? reply (a letter where a digit was)."""

    def on_reply(self, number: int, line: str, reply: bytes, terminator: bytes) -> tuple[Emission, bool]:
        if line.strip().upper() == ":FETC?":
            return Emission(reply.replace(b"E", b"x", 3) + terminator), False
        return super().on_reply(number, line, reply, terminator)


def test_driver_over_a_real_pty_measures_the_cell_the_model_made() -> None:
    model = SmuWireModel(ScaledClock(TIME_SCALE), seed=1)
    with PtyServer(Device(model)) as server:
        driver = SmuDriver(server.path, FAST_LINK)
        try:
            ctx, journal = context(ScaledClock(TIME_SCALE), trial_id=1)
            m = driver.run(GOOD, ctx)
        finally:
            driver.close()
    assert model.last_device is not None and model.last_device.failure is None
    assert m.status == "ok" and m.analysis == ANALYSIS_NAME and m.instrument.startswith("CLOSEDLOOP,SMU2400-SIM")
    assert m.values["pce"] == pytest.approx(DeviceModel().true_pce(GOOD), rel=0.2)
    assert 0.55 < m.values["voc"] < 0.65 and 5.0 < m.values["jsc"] < 12.0 and 0.55 < m.values["ff"] < 0.75
    assert m.artifacts["voltage_forward_V"].size == m.artifacts["current_reverse_A"].size == 121
    sent = [text for direction, text in journal if direction == "tx"]
    # Shutter open before the output goes on; both off again after the sweeps, before the analysis.
    assert sent.index(":SOUR2:TTL 1") < sent.index(":OUTP ON") < sent.index(":INIT")
    assert sent[-2:] == [":OUTP OFF", ":SOUR2:TTL 0"] and not model.output_on and not model.shutter_open
    assert ":SENS:CURR:PROT 2.000000E-02" in sent and ":SOUR:VOLT:STEP -0.0100" in sent  # the reverse sweep


def test_a_lines_film_is_measured_by_its_trial_id_and_process_parameters_are_refused() -> None:
    ledger = FilmLedger()
    ledger.record_coat(41, CoatedFilm(0.5, "chlorobenzene", 2000.0, 110.0, dewetted=False))
    ledger.record_anneal(41, Anneal(140.0, 10.0))
    ledger.record_coat(42, CoatedFilm(0.5, "chlorobenzene", 4000.0, 50.0, dewetted=True))
    model = SmuWireModel(ScaledClock(TIME_SCALE), seed=1, ledger=ledger)
    with PtyServer(Device(model)) as server:
        driver = SmuDriver(server.path, {**FAST_LINK, "sample_from": "line"})
        try:
            assert driver.describe() is SMU_LINE_DESCRIPTION
            with pytest.raises(EnvelopeViolation, match="declares no such setting"):
                driver.check({"anneal_temp": 140.0})
            made = driver.run({}, context(ScaledClock(TIME_SCALE), trial_id=41)[0])
            dewetted = driver.run({}, context(ScaledClock(TIME_SCALE), trial_id=42)[0])
            with pytest.raises(InstrumentFault, match="sample 43 unknown to the line"):
                driver.run({}, context(ScaledClock(TIME_SCALE), trial_id=43)[0])
        finally:
            driver.close()
    assert made.status == "ok" and made.values["pce"] == pytest.approx(DeviceModel().true_pce(GOOD), rel=0.2)
    assert made.duration_s > 270.0  # the transfer from the line
    assert dewetted.status == "failed_sample" and "no photocurrent" in dewetted.detail


def test_out_of_envelope_trials_are_refused_before_any_io() -> None:
    model = SmuWireModel(VirtualClock(), seed=0)
    device = Device(model)
    with PtyServer(device) as server:
        driver = SmuDriver(server.path, FAST_LINK)
        try:
            for bad, match in [({**GOOD, "sweep_stop": 2.0}, "above the maximum 1.5 V"),
                               ({**GOOD, "compliance": 0.5}, "above the maximum 0.1 A"),
                               ({**GOOD, "light_soak": 590.0}, "lamp_on_time"),
                               ({**GOOD, "sweep_start": 0.1}, "must span 0 V"),
                               ({k: v for k, v in GOOD.items() if k != "solvent"}, "made to the recipe")]:
                with pytest.raises(EnvelopeViolation, match=match):
                    driver.run(bad, context(VirtualClock())[0])
        finally:
            driver.close()
    assert device.commands == []
    with pytest.raises(ValueError, match="compliance = 0.2 A is outside the SMU's envelope"):
        SmuOptions.model_validate({"compliance": "200 mA"})
    assert driver_entry("smu").config is SmuOptions and driver_entry("smu").emulator == "smu"


def test_a_garbled_sweep_is_an_instrument_fault_and_the_station_goes_safe() -> None:
    model = SmuWireModel(ScaledClock(TIME_SCALE), seed=1)
    with PtyServer(Device(model, faults=GarbledSweep())) as server:
        driver = SmuDriver(server.path, FAST_LINK)
        try:
            with pytest.raises(InstrumentFault, match=r":FETC\?: expected a comma-separated list of numbers"):
                driver.run(GOOD, context(ScaledClock(TIME_SCALE))[0])
        finally:
            driver.close()
    assert not model.output_on and not model.shutter_open


def test_emulate_cli_serves_the_smu_on_a_pty_like_the_model_in_process() -> None:
    with emulator_process("smu", "--seed", "3", "--time-scale", str(TIME_SCALE)) as path:
        driver = SmuDriver(path, FAST_LINK)
        try:
            over_pty = driver.run(GOOD, context(ScaledClock(TIME_SCALE), trial_id=5)[0])
        finally:
            driver.close()
    in_process = SmuDriver("sim://smu", port=in_process_port("smu", seed=3)).run(GOOD, context(VirtualClock(), 5)[0])
    assert over_pty.status == in_process.status == "ok"
    assert over_pty.values == in_process.values
    assert 100.0 < in_process.duration_s < 400.0  # virtual time: mount, lamp stabilisation, two sweeps
