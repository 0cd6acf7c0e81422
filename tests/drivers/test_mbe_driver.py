"""The MBE driver against the chamber's wire emulator: a whole growth, refusals that never reach the wire,
the pressure interlock, flux tuning, the watchdog on a lost link, abort over a real pty, and a campaign.

The emulator refuses nothing and records every setpoint, rate and shutter state it receives
(`MbeWireModel.record`), so the safety checks below read what actually went over the wire."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import serial
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.clock import StationClock
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.engine.stations import make_stations
from closedloop.controller.protocol.model import ProtocolError, load_protocol
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.mbe_driver import SHUTTERS, Layer, MbeDriver, growth_rate_from_rheed
from closedloop.simulators.emulator import Device, EmulatedPort, PtyServer, ScaledClock
from closedloop.simulators.mbe.wire import CONTROLLERS, MbeWireModel, WireRecord
from closedloop.simulators.registry import in_process_port
from tests import paths

ROOT = paths.ROOT
GOOD = {"sr_cell_temp": 470.0, "ru_cell_temp": 1877.0, "substrate_temp": 758.0, "ozone_flow": 6.0, "growth_time": 60.0}
HEATER_OF = {ctrl: name for ctrl, name in CONTROLLERS.items()}
FAST = {"poll_s": 30.0, "soak_s": 60.0, "gauge_settle_s": 10.0, "gauge_readings": 4, "ex_situ_s": 60.0}


class Rig:
    """The driver on an in-process emulator, with a journal and a virtual clock."""

    def __init__(self, seed: int = 0, **options: object) -> None:
        self.port = in_process_port("mbe", seed=seed)
        self.driver = MbeDriver("sim://mbe", options, port=self.port)
        self.journal: list[tuple[str, str]] = []
        self.clock = StationClock(0.0)
        self.ctx = InstrumentContext(clock=self.clock, trial_id=1, journal=lambda d, t: self.journal.append((d, t)))

    @property
    def model(self) -> MbeWireModel:
        return self.port.device.model  # type: ignore[return-value]

    @property
    def record(self) -> list[WireRecord]:
        return self.model.record


def assert_record_inside_envelope(record: list[WireRecord], tripped: list[tuple[float, float]] = ()) -> None:
    """Every setpoint inside min/max, sent after a rate inside max_rate; ozone in range; no shutter opened
    while the interlock was tripped (`tripped`: record-index intervals)."""
    rates: dict[str, float] = {}
    for i, r in enumerate(record):
        if r.device in CONTROLLERS:
            limit = MBE_ENVELOPE.limits[HEATER_OF[r.device]]
            if r.field == "RATE":
                assert 0 < float(r.value) <= limit.max_rate, r
                rates[r.device] = float(r.value)
            else:
                assert limit.min <= float(r.value) <= limit.max, r
                assert r.device in rates, f"{r}: setpoint sent before any ramp rate"
        elif r.device == "OZONE":
            assert 0 <= float(r.value) <= MBE_ENVELOPE.limits["ozone_flow"].max, r
        elif r.device.startswith("SHUT:") and r.value == "OPEN":
            assert not any(lo <= i < hi for lo, hi in tripped), f"{r}: opened while the interlock was tripped"


# -- a growth ------------------------------------------------------------------------------------


def test_a_growth_measures_the_film_and_derives_its_rate_from_rheed() -> None:
    rig = Rig(seed=1, **FAST)
    m = rig.driver.run(GOOD, rig.ctx)
    assert m.status == "ok" and 60 < m.values["rrr"] < 90 and m.values["xrd_fwhm"] < 0.05
    # The RHEED period (first 10 min) and the ex-situ thickness (whole hour) agree on the growth rate.
    assert m.artifacts["rheed_growth_rate"] == pytest.approx(m.values["growth_rate"], rel=0.05)
    assert m.artifacts["beam_flux"]["sr_bep_torr"] > 0 and m.duration_s > 3600
    sent = [t for d, t in rig.journal if d == "tx"]
    assert sent.index("SR_CELL:RATE 20.0") + 2 == sent.index("SR_CELL:SP 470.0")  # SYST:ERR? between
    assert sent.index("SHUT:MAIN OPEN") < sent.index("RHEED:CAPT 600") < sent.index("GROW:MEAS?")
    assert_record_inside_envelope(rig.record)
    assert rig.model.chamber.controllers["ru_cell_temp"].target == 1200.0  # left at idle
    assert rig.model.chamber.ozone_sccm == 0.0


def test_a_wrong_phase_growth_is_a_failed_sample() -> None:
    rig = Rig(**FAST)
    m = rig.driver.run({**GOOD, "substrate_temp": 500.0, "sr_cell_temp": 250.0}, rig.ctx)
    assert m.status == "failed_sample" and "rrr" not in m.values and "too cold" in m.detail
    # The Sr cell ran below its idle temperature: cooling down never heats it (ozone is still on then).
    assert rig.model.chamber.controllers["sr_cell_temp"].target == 250.0


def test_growth_rate_from_an_oscillation_and_none_from_noise() -> None:
    t = np.arange(0.0, 600.0, 0.2)
    noise = np.random.default_rng(0).normal(0.0, 0.01, t.shape)
    intensity = 0.4 + 0.5 * np.exp(-t / 300) * np.cos(2 * math.pi * t / 16.0) + noise
    assert growth_rate_from_rheed(t, intensity) == pytest.approx(3.93 / 16.0, rel=0.01)
    assert math.isnan(growth_rate_from_rheed(t, 0.4 + noise))
    assert math.isnan(growth_rate_from_rheed(t, 0.4 + 0 * t))


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("heater", "target", "rate", "reason"), [
    ("sr_cell_temp", 700.0, 10.0, "above the maximum 650"),
    ("ru_cell_temp", 1850.0, 12.0, "max_rate 10"),
    ("substrate_temp", 10.0, 5.0, "below the minimum 20"),
    ("ga_cell_temp", 900.0, 5.0, "not a heater"),
    ("substrate_temp", 500.0, 0.0, "must be > 0"),
])
def test_unsafe_requests_are_refused_journaled_and_never_sent(heater: str, target: float, rate: float, reason: str) -> None:
    rig = Rig()
    with pytest.raises(EnvelopeViolation, match=reason):
        rig.driver.set_temperature(heater, target, rate, rig.ctx)
    assert rig.record == []
    assert any(d == "tx" and t.startswith("REFUSED") and reason in t for d, t in rig.journal)
    with pytest.raises(EnvelopeViolation, match="ozone_flow"):
        rig.driver.run({**GOOD, "ozone_flow": 25.0}, rig.ctx)
    assert rig.record == []


def test_unsafe_options_are_refused_when_the_driver_is_built() -> None:
    with pytest.raises(ValueError, match="max_rate 10"):
        MbeDriver("sim://mbe", {"ramp_rate": {"ru_cell_temp": 15.0}}, port=in_process_port("mbe"))
    with pytest.raises(ValueError, match="(?s)ramp_rates.*Extra inputs are not permitted"):
        MbeDriver("sim://mbe", {"ramp_rates": {}}, port=in_process_port("mbe"))


def test_the_interlock_refuses_heating_gas_and_shutters() -> None:
    rig = Rig()
    rig.model.chamber.burst_torr = 2e-4  # the chamber is up to air-ish: interlock tripped
    for attempt in (lambda: rig.driver.set_temperature("sr_cell_temp", 450.0, 10.0, rig.ctx),
                    lambda: rig.driver.set_ozone(2.0, rig.ctx),
                    lambda: rig.driver.set_shutters(frozenset({"SR"}), rig.ctx)):
        with pytest.raises(InstrumentFault, match="interlock is TRIPPED"):
            attempt()
    assert [r for r in rig.record if r.value == "OPEN" or r.field in ("SP", "FLOW")] == []
    assert sum(t.startswith("REFUSED") for d, t in rig.journal) == 3
    rig.driver.set_temperature("sr_cell_temp", 250.0, 10.0, rig.ctx)  # cooling down stays allowed
    assert rig.record[-1] == WireRecord(0.0, "SR_CELL", "SP", 250.0)


def test_no_heating_while_ozone_raises_the_pressure() -> None:
    rig = Rig()
    rig.driver.set_ozone(5.0, rig.ctx)
    with pytest.raises(InstrumentFault, match=r"above 5\.0e-07 Torr"):
        rig.driver.set_temperature("ru_cell_temp", 1300.0, 10.0, rig.ctx)
    rig.driver.set_shutters(frozenset({"MAIN"}), rig.ctx)  # the process limit still allows growth
    assert rig.record[-1].value == "OPEN"


# -- flux tuning ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "start", "target"), [("sr", 470.0, 9.0e-8), ("sr", 470.0, 2.0e-8), ("ru", 1850.0, 6.0e-8)])
def test_flux_tuning_reaches_the_target_bep_within_2_percent_in_5_iterations(cell: str, start: float, target: float) -> None:
    rig = Rig(seed=4, **FAST)
    heater = {"sr": "sr_cell_temp", "ru": "ru_cell_temp"}[cell]
    rig.driver.set_temperature(heater, start, rig.driver.options.ramp_rate[heater], rig.ctx)
    tuned = rig.driver.tune_flux(cell, target, rig.ctx)
    assert tuned.iterations <= 5 and tuned.bep == pytest.approx(target, rel=0.02)
    true_bep = rig.model.chamber.beam_bep(cell)  # the chamber's own flux at the temperature reached
    assert true_bep == pytest.approx(target, rel=0.02)
    assert len(tuned.steps) == tuned.iterations and tuned.steps[0][0] == start
    assert_record_inside_envelope(rig.record)


# -- watchdog: the link goes away in the middle of a recipe ----------------------------------------


class Cable:
    """An emulated port whose cable can be cut: while cut, I/O fails and `opens_to_fail` opens fail."""

    def __init__(self, port: EmulatedPort) -> None:
        self.port = port
        self.opens_to_fail = 0
        self.cut = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.port, name)

    def _link(self) -> None:
        if self.cut:
            raise serial.SerialException("cable cut")

    def open(self) -> None:
        if self.opens_to_fail > 0:
            self.opens_to_fail -= 1
            raise serial.SerialException("cable cut")
        self.cut = False
        self.port.open()

    def write(self, data: bytes) -> int:
        self._link()
        return self.port.write(data)

    def read(self, size: int = 1) -> bytes:
        self._link()
        return self.port.read(size)


def test_a_link_lost_mid_recipe_puts_the_chamber_in_its_safe_state_once_it_answers() -> None:
    cable = Cable(in_process_port("mbe"))
    driver = MbeDriver("sim://mbe", FAST, port=cable)
    clock = StationClock(0.0)
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=clock, trial_id=1, journal=lambda d, t: journal.append((d, t)))
    driver.set_temperature("substrate_temp", 700.0, 30.0, ctx)
    model: MbeWireModel = cable.port.device.model  # type: ignore[assignment]

    cut_at: list[int] = []

    def cut_during_growth(seconds: float) -> None:
        StationClock.sleep(clock, seconds)
        if model.main_open and not cut_at:
            cable.cut, cable.opens_to_fail = True, driver.transport.settings.reconnect_attempts
            cut_at.append(len(model.record))

    clock.sleep = cut_during_growth  # type: ignore[method-assign]
    with pytest.raises(InstrumentFault, match="could not reopen"):
        driver.run_recipe([Layer(frozenset(SHUTTERS), 1800.0)], ctx)
    after = [(r.device, r.field, r.value) for r in model.record[cut_at[0]:]]
    assert after == [("SHUT:SR", "STATE", "CLOS"), ("SHUT:RU", "STATE", "CLOS"), ("SHUT:MAIN", "STATE", "CLOS"),
                     ("OZONE", "FLOW", 0.0), ("BFM", "STATE", "OUT"),
                     ("SUBSTRATE", "RATE", 30.0), ("SUBSTRATE", "SP", 200.0)]  # the cells were at idle already
    assert model.chamber.ozone_sccm == 0.0 and not model.chamber.gauge.inserted
    assert any("[link lost" in t for _, t in journal)


# -- the property: whatever is asked, the wire only ever carries safe commands ----------------------



def _temperature_request(heater: str) -> st.SearchStrategy[tuple]:
    """Half inside the heater's limits, half anywhere: both refusals and real ramps get exercised."""
    limit = MBE_ENVELOPE.limits[heater]
    target = st.floats(limit.min, limit.max) | st.floats(-100, 2500)
    rate = st.floats(0.5, limit.max_rate) | st.floats(0.5, 60)
    return st.tuples(st.just("temp"), st.just(heater), target, rate)


temperature_requests = st.sampled_from(list(CONTROLLERS.values())).flatmap(_temperature_request)
actions = st.one_of(
    temperature_requests,
    temperature_requests,  # twice: setpoints are what the envelope mostly guards
    st.tuples(st.just("shutters"), st.frozensets(st.sampled_from(SHUTTERS))),
    st.tuples(st.just("ozone"), st.just(0.0) | st.floats(-5, 30)),
    st.tuples(st.just("recipe"), st.lists(st.tuples(st.frozensets(st.sampled_from(SHUTTERS)), st.floats(1, 900)),
                                          min_size=1, max_size=3)),
    st.tuples(st.just("burst"), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0, 3600)),
    st.tuples(st.just("abort")),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=1, max_size=20))
def test_random_driver_calls_never_put_anything_unsafe_on_the_wire(calls: list[tuple]) -> None:
    rig = Rig(poll_s=60.0)
    tripped: list[tuple[float, float]] = []
    burst_since: int | None = None
    for call in calls:
        kind, before = call[0], len(rig.record)
        try:
            if kind == "temp":
                _, heater, target, rate = call
                limit = MBE_ENVELOPE.limits[heater]
                unsafe = not (limit.min <= target <= limit.max and rate <= limit.max_rate)
                try:
                    rig.driver.set_temperature(heater, target, rate, rig.ctx)
                except EnvelopeViolation:
                    assert unsafe and len(rig.record) == before  # refused before a byte was written
                    continue
                assert not unsafe
            elif kind == "shutters":
                rig.driver.set_shutters(call[1], rig.ctx)
            elif kind == "ozone":
                try:
                    rig.driver.set_ozone(call[1], rig.ctx)
                except EnvelopeViolation:
                    assert not 0 <= call[1] <= 20 and len(rig.record) == before
            elif kind == "recipe":
                rig.driver.run_recipe([Layer(s, d) for s, d in call[1]], rig.ctx)
            elif kind == "burst":
                rig.model.chamber.burst_torr = 2e-4 if call[1] else 0.0
                if call[1] and burst_since is None:
                    burst_since = len(rig.record)
                elif not call[1] and burst_since is not None:
                    tripped.append((burst_since, len(rig.record)))
                    burst_since = None
            elif kind == "wait":
                rig.clock.sleep(call[1])
            else:
                rig.driver.abort()
                assert {r.device: r.value for r in rig.record if r.device.startswith("SHUT:")}.keys() <= {
                    f"SHUT:{s}" for s in SHUTTERS}
                assert not any(rig.model._is_open(s) for s in SHUTTERS) and rig.model.chamber.ozone_sccm == 0.0
        except InstrumentFault as e:
            assert "interlock" in str(e) or "Torr" in str(e) or "aborted" in str(e), e
    if burst_since is not None:
        tripped.append((burst_since, len(rig.record) + 1))
    assert_record_inside_envelope(rig.record, tripped)
    event(f"{sum(r.field == 'SP' for r in rig.record)} setpoints, {sum(r.value == 'OPEN' for r in rig.record)} shutter openings sent")


# -- abort in the middle of a growth, over a real pseudo-terminal -----------------------------------

SCALE = 600.0  # emulated seconds per wall second: a one-hour layer takes six seconds


@pytest.fixture
def pty_chamber() -> Iterator[tuple[PtyServer, MbeWireModel]]:
    model = MbeWireModel(ScaledClock(SCALE), seed=2)
    with PtyServer(Device(model)) as server:
        yield server, model


def test_abort_mid_growth_over_a_pty_closes_shutters_stops_ozone_and_ramps_to_idle_safely(
        pty_chamber: tuple[PtyServer, MbeWireModel]) -> None:
    server, model = pty_chamber
    driver = MbeDriver(server.path, {"poll_s": 15.0})
    ctx = InstrumentContext(clock=ScaledClock(SCALE), trial_id=1)
    try:
        for heater, target in (("sr_cell_temp", 470.0), ("ru_cell_temp", 1300.0), ("substrate_temp", 700.0)):
            driver.set_temperature(heater, target, driver.options.ramp_rate[heater], ctx)
        driver.set_ozone(0.3, ctx)  # low enough to keep the chamber under the heating limit
        outcome: list[BaseException] = []

        def grow() -> None:
            try:
                driver.run_recipe([Layer(frozenset(SHUTTERS), 3600.0)], ctx)
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                outcome.append(e)

        grower = threading.Thread(target=grow)
        grower.start()
        deadline = time.monotonic() + 10
        while not model.main_open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert model.main_open, "growth never started"
        time.sleep(0.3)  # a few emulated minutes into the layer
        aborted_at = len(model.record)
        driver.abort()
        grower.join(timeout=10)
        assert not grower.is_alive() and isinstance(outcome[0], InstrumentFault) and "aborted" in str(outcome[0])
    finally:
        driver.close()
    after = model.record[aborted_at:]
    assert {(r.device, r.value) for r in after if r.device.startswith("SHUT:")} == {
        ("SHUT:SR", "CLOS"), ("SHUT:RU", "CLOS"), ("SHUT:MAIN", "CLOS")}
    assert not any(r.value == "OPEN" for r in after)
    assert ("OZONE", "FLOW", 0.0) in [(r.device, r.field, r.value) for r in after]
    idle = driver.options.idle
    for ctrl, heater in CONTROLLERS.items():
        loop = model.chamber.controllers[heater]
        assert loop.target == idle[heater] and loop.rate_per_min <= MBE_ENVELOPE.limits[heater].max_rate
        sent = [(r.field, r.value) for r in after if r.device == ctrl]
        assert sent == [("RATE", driver.options.ramp_rate[heater]), ("SP", idle[heater])]
    assert not model.main_open and model.chamber.ozone_sccm == 0.0
    assert_record_inside_envelope(model.record)


# -- a short campaign through the example protocol, in process and virtual time ---------------------


@pytest.mark.slow
def test_a_campaign_through_the_example_protocol_runs_the_driver_and_stores_its_commands(tmp_path: Path) -> None:
    text = (ROOT / "protocols" / "mbe_srruo3.yaml").read_text()
    for old, new in (("budget: {trials: 35, wall_time: 45 day}", "budget: {trials: 4}"),
                     ("initial: {method: sobol, n: 6}", "initial: {method: sobol, n: 4}"),
                     ("  mode: outside_region\n", "  mode: none\n")):
        assert old in text
        text = text.replace(old, new)
    protocol = tmp_path / "mbe.yaml"
    protocol.write_text(text)
    (station,) = make_stations(load_protocol(protocol), seed=1, sim=False)
    assert isinstance(station.driver, MbeDriver) and station.virtual is True
    started = time.monotonic()
    with Campaign.create(protocol, tmp_path / "mbe.sqlite") as c:
        assert c.run().kind is HaltKind.BUDGET
        trials = c.store.trials()
        assert len(trials) == 4 and {t.state for t in trials} <= {"measured", "failed"}
        assert all("rrr" in t.values if t.state == "measured" else t.detail.startswith("wrong phase") for t in trials)
        for t in trials:
            sent = [row["text"] for row in c.store.commands(t.id) if row["direction"] == "tx"]
            assert f"RU_CELL:SP {t.conditions['ru_cell_temp']!r}" in sent and "GROW:MEAS?" in sent
            assert t.duration_s > 3600
    assert time.monotonic() - started < 60


def test_stations_pick_the_driver_by_connection_and_keep_the_whole_system_simulator(tmp_path: Path) -> None:
    text = (ROOT / "protocols" / "mbe_srruo3.yaml").read_text()
    live = tmp_path / "live.yaml"
    live.write_text(text.replace("connection: sim://mbe", "connection: /dev/ttyUSB9"))
    (station,) = make_stations(load_protocol(live), seed=0, sim=False)
    assert isinstance(station.driver, MbeDriver) and station.virtual is False
    assert station.driver.transport.url == "/dev/ttyUSB9" and not station.driver.transport.is_open
    (simulated,) = make_stations(load_protocol(live), seed=0, sim=True)
    assert isinstance(simulated.driver, MbeDriver) and simulated.virtual is True
    whole = tmp_path / "whole.yaml"
    whole.write_text(text.replace("driver: mbe", "driver: sim:mbe"))
    (system,) = make_stations(load_protocol(whole), seed=0, sim=False)
    assert type(system.driver).__name__ == "SimulatedMbeSystem"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("connection: sim://mbe", "connection: sim://mbe\n  options: {ramp_rate: {ru_cell_temp: 50}}"))
    with pytest.raises(ProtocolError, match="max_rate 10") as refused:  # refused when the protocol is read
        load_protocol(bad)
    assert refused.value.problems[0].field == "instrument.options.ramp_rate"


def test_closedloop_emulate_serves_the_chamber_on_a_pty_for_the_driver() -> None:
    process = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", "mbe", "--pty", "--time-scale", "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on /dev/"), first + (process.stderr.read() if process.stderr else "")
        driver = MbeDriver(first.removeprefix("listening on ").strip())
        journal: list[tuple[str, str]] = []
        ctx = InstrumentContext(clock=ScaledClock(600.0), trial_id=1, journal=lambda d, t: journal.append((d, t)))
        driver.set_temperature("substrate_temp", 230.0, 30.0, ctx)
        driver.wait_until_stable(["substrate_temp"], ctx)
        assert abs(float(driver.transport.query("SUBSTRATE:PV?")) - 230.0) < 2.0
        with pytest.raises(EnvelopeViolation):
            driver.set_temperature("substrate_temp", 950.0, 30.0, ctx)
        assert ("tx", "SUBSTRATE:SP 950.0") not in journal
        driver.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
