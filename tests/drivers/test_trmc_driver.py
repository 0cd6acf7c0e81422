"""The TRMC driver against the station's wire emulator: over a real pseudo-terminal (wall clock, scaled),
in process (virtual time), with a cut-short binary block, and refusing out-of-envelope trials."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from closedloop.controller.engine.clock import VirtualClock
from closedloop.controller.engine.stations import InstrumentUnavailable, make_stations
from closedloop.controller.protocol.model import parse_protocol_text
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.trmc import TRMC_DESCRIPTION
from closedloop.drivers.trmc_analysis import ANALYSIS_NAME, ANALYSIS_VERSION
from closedloop.drivers.trmc_driver import TrmcDriver
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock
from closedloop.simulators.faults import Emission, FaultInjector
from closedloop.simulators.registry import in_process_port
from closedloop.simulators.trmc.station import SimulatedTrmcStation
from closedloop.simulators.trmc.wire import TrmcWireModel
from tests import paths

ROOT = paths.ROOT
GOOD_FILM = {
    "acceptor_fraction": 0.5,
    "anneal_temp": 140.0,
    "anneal_time": 10.0,
    "spin_speed": 2000,
    "solvent": "chlorobenzene",
}
TIME_SCALE = 7200.0  # emulated seconds per wall second: a 12-minute trial takes ~0.1 s
FAST_LINK = {"timeout": 1.0, "poll_s": 2.0, "opc_margin_s": 600.0}


def context(clock: Any, trial_id: int = 1, **kwargs: Any) -> tuple[InstrumentContext, list[tuple[str, str]]]:
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=clock, trial_id=trial_id, journal=lambda d, t: journal.append((d, t)), **kwargs)
    return ctx, journal


class CutCurve(FaultInjector):
    """The link drops the second half of every CURV? block (a cable fault mid-transfer)."""

    def on_reply(self, number: int, line: str, reply: bytes, terminator: bytes) -> tuple[Emission, bool]:
        if line.strip().upper() == "CURV?":
            self.injected.append((number, "cut_block"))
            return Emission(reply[: len(reply) // 2]), False
        return super().on_reply(number, line, reply, terminator)


def test_driver_over_a_real_pty_matches_the_emulator_ground_truth() -> None:
    model = TrmcWireModel(ScaledClock(TIME_SCALE), seed=5)
    with PtyServer(Device(model)) as server:
        driver = TrmcDriver(server.path, FAST_LINK)
        try:
            ctx, journal = context(ScaledClock(TIME_SCALE))
            measurement = driver.run(GOOD_FILM, ctx)
        finally:
            driver.close()
    truth = model.last_transient.truth
    assert measurement.status == "ok"
    assert measurement.values["phi_sum_mu_max"] == pytest.approx(truth.phi_sum_mu_max, rel=0.05)
    assert measurement.values["tau_half"] == pytest.approx(truth.tau_half_ns, rel=0.10)
    assert measurement.analysis == ANALYSIS_NAME and measurement.analysis_version == ANALYSIS_VERSION
    assert measurement.instrument.startswith("CLOSEDLOOP,TRMC-SIM")
    assert measurement.artifacts["time_s"].shape == measurement.artifacts["dPr_over_Pr"].shape
    calibration = measurement.artifacts["calibration"]
    assert {"A", "I0", "F_light", "f0", "Q"} <= set(calibration)
    assert calibration["I0"] == pytest.approx(3e14)
    assert not model.shutter_open
    sent = [text for direction, text in journal if direction == "tx"]
    # Shutter open only around the shots, and closed again before the record is read.
    assert sent.index("EXC:SHUT OPEN") < sent.index("ACQ:SING") < sent.index("EXC:SHUT CLOS", sent.index("ACQ:SING"))
    assert sent.index("EXC:SHUT CLOS", sent.index("ACQ:SING")) < sent.index("CURV?")


def test_emulate_cli_serves_the_station_on_a_pty() -> None:
    """`closedloop emulate trmc --pty` in its own process measures the same film as the model in process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "emulate", "trmc", "--pty", "--seed", "3", "--time-scale", str(TIME_SCALE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on /dev/"), first + (process.stderr.read() if process.poll() else "")
        driver = TrmcDriver(first.split()[-1], FAST_LINK)
        try:
            over_pty = driver.run(GOOD_FILM, context(ScaledClock(TIME_SCALE))[0])
        finally:
            driver.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    in_process = TrmcDriver("sim://trmc", port=in_process_port("trmc", seed=3)).run(GOOD_FILM, context(VirtualClock())[0])
    assert over_pty.status == in_process.status == "ok"
    # Physics depends on the seed and the film count, not on time: the same bytes, the same analysis.
    np.testing.assert_array_equal(over_pty.artifacts["dPr_over_Pr"], in_process.artifacts["dPr_over_Pr"])
    assert over_pty.values == in_process.values


def test_a_cut_short_binary_block_is_an_instrument_fault_within_the_timeout() -> None:
    model = TrmcWireModel(ScaledClock(TIME_SCALE), seed=1)
    device = Device(model, faults=CutCurve())
    with PtyServer(device) as server:
        driver = TrmcDriver(server.path, {**FAST_LINK, "timeout": 0.3, "retries": 1})
        try:
            ctx, journal = context(ScaledClock(TIME_SCALE))
            started = time.monotonic()
            with pytest.raises(InstrumentFault, match="CURV") as caught:
                driver.run(GOOD_FILM, ctx)
            elapsed = time.monotonic() - started
        finally:
            driver.close()
    assert "binary block announced" in str(caught.value)
    assert device.commands.count("CURV?") == 2  # the query and its one retry, then the fault
    assert elapsed < 3.0  # two 0.3 s timeouts plus a trial of emulated minutes, never a hang
    assert not model.shutter_open


def test_out_of_envelope_trials_are_refused_before_any_byte() -> None:
    port = in_process_port("trmc", seed=0)
    driver = TrmcDriver("sim://trmc", port=port)
    ctx, journal = context(VirtualClock())
    with pytest.raises(EnvelopeViolation, match="anneal_temp"):
        driver.run({**GOOD_FILM, "anneal_temp": 300.0}, ctx)
    with pytest.raises(EnvelopeViolation, match="solvent"):
        driver.run({k: v for k, v in GOOD_FILM.items() if k != "solvent"}, ctx)
    with pytest.raises(EnvelopeViolation, match="fluence"):
        driver.run({**GOOD_FILM, "fluence": 1e17}, ctx)
    assert port.device.commands == []
    assert journal == []


def test_station_errors_and_bad_options_are_reported() -> None:
    port = in_process_port("trmc", seed=0, faults="syst_err:once@1")
    with pytest.raises(InstrumentFault, match="Data out of range"):
        TrmcDriver("sim://trmc", port=port).run(GOOD_FILM, context(VirtualClock())[0])
    # Options are the driver's pydantic model (TrmcOptions), which `closedloop validate` also checks.
    with pytest.raises(ValueError, match="(?s)avrages.*Extra inputs are not permitted"):
        TrmcDriver("sim://trmc", {"avrages": 16}, port=in_process_port("trmc"))
    with pytest.raises(ValueError, match="(?s)averages.*above the maximum 1024"):
        TrmcDriver("sim://trmc", {"averages": 5000}, port=in_process_port("trmc"))
    with pytest.raises(ValueError, match="(?s)timeout.*expected a duration"):
        TrmcDriver("sim://trmc", {"timeout": "often"}, port=in_process_port("trmc"))
    assert TrmcDriver("sim://trmc", {"timeout": "500 ms"}, port=in_process_port("trmc")).options.timeout == 0.5
    with pytest.raises(ValueError, match="(?s)manual_loading.*valid boolean"):
        TrmcDriver("sim://trmc", {"manual_loading": "yes"}, port=in_process_port("trmc"))
    with pytest.raises(ValueError, match="(?s)word_format.*'INT16', 'FLOAT32' or 'ASCII'"):
        TrmcDriver("sim://trmc", {"word_format": "REAL64"}, port=in_process_port("trmc"))


def test_manual_loading_asks_the_operator_before_the_film_goes_in() -> None:
    port = in_process_port("trmc", seed=2)
    seen: list[tuple[str, list[str]]] = []
    driver = TrmcDriver("sim://trmc", {"manual_loading": True, "word_format": "FLOAT32"}, port=port)
    ctx, _ = context(VirtualClock(), trial_id=7, confirm=lambda m: seen.append((m, list(port.device.commands))))
    measurement = driver.run(GOOD_FILM, ctx)
    assert len(seen) == 1
    message, sent_before = seen[0]
    assert "trial 7" in message and "confirm" in message
    assert "SAMP:PREP" in sent_before and "SAMP:LOAD" not in sent_before
    assert measurement.status == "ok"
    assert "WAV:FORM FLOAT32" in port.device.commands


def test_in_process_trials_run_in_virtual_time_and_match_truth() -> None:
    port = in_process_port("trmc", seed=11)
    driver = TrmcDriver("sim://trmc", port=port)
    clock = VirtualClock()
    ctx, _ = context(clock)
    measurement = driver.run({**GOOD_FILM, "averages": 128, "wavelength": 520.0}, ctx)
    truth = port.device.model.last_transient
    assert measurement.duration_s == pytest.approx(clock.now())
    assert measurement.duration_s >= 60.0 + 600.0 + 30.0 + 20.0 + 12.8  # spin, anneal, load, tune, shots
    assert measurement.values["phi_sum_mu_max"] == pytest.approx(truth.truth.phi_sum_mu_max, rel=0.05)
    assert measurement.artifacts["calibration"]["wavelength"] == 520.0
    assert measurement.artifacts["calibration"]["averages"] == 128.0


def test_safe_state_closes_the_shutter_and_never_raises() -> None:
    port = in_process_port("trmc")
    driver = TrmcDriver("sim://trmc", port=port)
    port.device.model.shutter_open = True
    driver.safe_state()
    assert not port.device.model.shutter_open
    assert driver.recover(1, context(VirtualClock())[0]) is None
    gone = TrmcDriver("/dev/does-not-exist-trmc", {"timeout": 0.1})
    gone.safe_state()  # the port cannot even open: logged, not raised
    assert gone.describe() is TRMC_DESCRIPTION


PROTOCOL = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text()


def stations_for(driver: str, connection: str, sim: bool = False) -> list[Any]:
    text = PROTOCOL.replace("driver: trmc", f"driver: {driver}").replace(
        "connection: sim://trmc", f"connection: {connection}"
    )
    return make_stations(parse_protocol_text(text), seed=0, sim=sim)


def test_stations_pick_the_trmc_driver_or_the_fast_simulator() -> None:
    (emulated,) = stations_for("trmc", "sim://trmc")
    assert isinstance(emulated.driver, TrmcDriver) and emulated.virtual
    assert emulated.driver.options.averages == 64 and emulated.driver.options.wavelength == 500.0
    (fast,) = stations_for("sim:trmc", "sim://trmc")
    assert isinstance(fast.driver, SimulatedTrmcStation)
    (real,) = stations_for("trmc", "/dev/ttyUSB9")  # not opened until the first trial
    assert isinstance(real.driver, TrmcDriver) and not real.virtual
    (forced,) = stations_for("trmc", "/dev/ttyUSB9", sim=True)
    assert forced.virtual
    with pytest.raises(InstrumentUnavailable, match="sim://trmc"):
        stations_for("trmc", "sim://furnace")


def test_fault_spec_reaches_the_emulated_station() -> None:
    text = PROTOCOL.replace("options: {averages: 64, wavelength: 500 nm}", "options: {faults: 'no_reply:1.0'}")
    (station,) = make_stations(parse_protocol_text(text), seed=0, sim=False)
    with pytest.raises(InstrumentFault, match=r"\*IDN\?"):
        station.driver.run(GOOD_FILM, context(VirtualClock())[0])
    assert math.isfinite(station.driver.options.timeout)
