"""The OPV line's drivers against their emulators: the coating robot over a real pty and in process,
its re-send on NAK or a damaged reply, envelope refusals before I/O and dewetting as a failed sample;
the hot plate described in YAML; and a film coated, annealed and measured by three drivers on three
emulators sharing one ledger, which measures as the one-instrument TRMC station does."""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest
import yaml

from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.nmea import frame
from closedloop.drivers.opv_robot_driver import OpvRobotDriver
from closedloop.drivers.registry import driver_entry
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.drivers.trmc import TRMC_LINE_DESCRIPTION, TrmcOptions
from closedloop.drivers.trmc_driver import TrmcDriver
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock
from closedloop.simulators.faults import Emission, FaultInjector
from closedloop.simulators.line import hotplate
from closedloop.simulators.line.hotplate import HotplateModel
from closedloop.simulators.line.ledger import FilmLedger, shared_ledger
from closedloop.simulators.line.robot import OpvRobotModel
from closedloop.simulators.registry import emulator, in_process_port
from closedloop.simulators.trmc.process import TrmcProcessModel
from closedloop.simulators.trmc.wire import TrmcWireModel
from tests.emulated import emulator_process

BLEND = {"acceptor_fraction": 0.5, "solvent": "chlorobenzene", "spin_speed": 2000}
ANNEAL = {"anneal_temp": 140.0, "anneal_time": 10.0}
TIME_SCALE = 7200.0
FAST_ROBOT = {"timeout": 1.0, "poll_s": 5.0}
FAST_TRMC = {"timeout": 1.0, "poll_s": 2.0, "opc_margin_s": 600.0}


def context(clock: Any, trial_id: int) -> tuple[InstrumentContext, list[tuple[str, str]]]:
    journal: list[tuple[str, str]] = []
    return InstrumentContext(clock=clock, trial_id=trial_id, journal=lambda d, t: journal.append((d, t))), journal


def hotplate_section(connection: str) -> SerialInstrumentConfig:
    """The instrument section the hot plate's module docstring gives, on `connection`."""
    text = inspect.getdoc(hotplate) or ""
    block = text[text.index("    instrument:"):]
    section = yaml.safe_load(textwrap.dedent(block))["instrument"]
    return SerialInstrumentConfig.model_validate({**section, "connection": connection})


class Damaging(FaultInjector):
    """Damages the first `replies` replies to `command` (flips a byte, so the checksum fails)."""

    def __init__(self, command: str, replies: int) -> None:
        super().__init__()
        self.command, self.left = command, replies

    def on_reply(self, number: int, line: str, reply: bytes, terminator: bytes) -> tuple[Emission, bool]:
        if line.startswith(f"${self.command}") and self.left > 0:
            self.left -= 1
            return Emission(reply.replace(b",", b";", 1) + terminator), False
        return super().on_reply(number, line, reply, terminator)


def test_robot_driver_over_a_real_pty_coats_and_reads_the_thickness() -> None:
    ledger = FilmLedger()
    with PtyServer(Device(OpvRobotModel(ScaledClock(TIME_SCALE), seed=1, ledger=ledger))) as server:
        driver = OpvRobotDriver(server.path, FAST_ROBOT)
        try:
            ctx, journal = context(ScaledClock(TIME_SCALE), trial_id=12)
            measurement = driver.run(BLEND, ctx)
        finally:
            driver.close()
    assert measurement.status == "ok" and measurement.units == {"thickness": "nm"}
    assert measurement.values["thickness"] == pytest.approx(110.0, rel=0.05)
    assert measurement.instrument.startswith("OPVBOT") and measurement.duration_s >= 120.0
    sent = [t for d, t in journal if d == "tx"]
    assert sent[:2] == [frame("ID"), frame("COAT", "12", "0.5000", "chlorobenzene", "2000")]
    film = ledger.film(12)
    assert film is not None and film.coated is not None and film.coated.spin_speed == 2000.0


def test_robot_driver_in_process_resends_once_after_a_nak_or_a_damaged_reply() -> None:
    for command in ("COAT", "STAT"):
        port = in_process_port("opv_robot", seed=2)
        port.device.faults = Damaging(command, replies=1)
        ctx, journal = context(StationClock(0.0), trial_id=101)
        assert OpvRobotDriver("sim://opv_robot", port=port).run(BLEND, ctx).status == "ok"
        coats = [t for d, t in journal if d == "tx" and t.startswith("$COAT")]
        assert len(coats) == (2 if command == "COAT" else 1)  # the robot acknowledged the re-sent COAT
    port = in_process_port("opv_robot", seed=2)
    port.device.faults = Damaging("STAT", replies=2)
    with pytest.raises(InstrumentFault, match=r"\$STAT\*.*damaged reply.*twice"):
        OpvRobotDriver("sim://opv_robot", port=port).run(BLEND, context(StationClock(0.0), trial_id=102)[0])
    # A sentence the robot got damaged: NAK, then the driver gives up after one re-send.
    robot = OpvRobotModel(StationClock(0.0), ledger=FilmLedger())
    assert robot.handle("$ID*99") == frame("NAK", "CHECKSUM")


def test_robot_refuses_out_of_envelope_blends_before_any_byte() -> None:
    port = in_process_port("opv_robot")
    driver = OpvRobotDriver("sim://opv_robot", port=port)
    for bad, name in (({**BLEND, "spin_speed": 9000}, "spin_speed"), ({**BLEND, "solvent": "water"}, "solvent"),
                      ({**BLEND, "anneal_temp": 100.0}, "anneal_temp"), ({"solvent": "chloroform"}, "acceptor_fraction")):
        with pytest.raises(EnvelopeViolation) as refused:
            driver.run(bad, context(StationClock(0.0), trial_id=1)[0])
        assert refused.value.parameter == name
    assert port.device.commands == []


def test_a_dewetted_film_is_a_failed_sample() -> None:
    ledger = shared_ledger()
    driver, clock = OpvRobotDriver("sim://opv_robot?seed=0"), StationClock(0.0)  # one timeline for the robot
    outcomes = [driver.run({**BLEND, "spin_speed": 4000}, context(clock, trial_id=200 + i)[0]) for i in range(6)]
    failed = [m for m in outcomes if m.status == "failed_sample"]
    assert failed and all("dewetted" in m.detail and "4000 rpm" in m.detail for m in failed)
    assert all(ledger.film(200 + i).coated.dewetted == (m.status == "failed_sample")  # type: ignore[union-attr]
               for i, m in enumerate(outcomes))


def test_hotplate_section_validates_and_anneals_the_sample_it_is_told() -> None:
    section = hotplate_section("sim://hotplate?seed=1")
    assert section.start == ["SAMP:ID {sample}", "INIT"]
    assert set(section.describe().envelope.limits) <= set(emulator("hotplate").accepts.envelope.limits)  # type: ignore[union-attr]
    driver = SerialInstrumentDriver(section)
    ctx, journal = context(StationClock(0.0), trial_id=301)
    measurement = driver.run(ANNEAL, ctx)
    assert measurement.status == "ok" and measurement.values["plate_temp"] == pytest.approx(140.0, abs=1.5)
    assert "SAMP:ID 301" in [t for d, t in journal if d == "tx"]
    assert measurement.duration_s >= hotplate.anneal_seconds(140.0, 10.0)
    film = shared_ledger().film(301)
    assert film is not None and film.anneal is not None and film.anneal.temp_c == 140.0


def test_sample_placeholders_in_serial_templates() -> None:
    base = hotplate_section("sim://hotplate").model_dump()
    with_set = {**base, "set": {**base["set"], "anneal_temp": "SAMP:ID {sample};SOUR:TEMP {value:.1f}"}}
    assert SerialInstrumentConfig.model_validate(with_set).set["anneal_temp"].command.startswith("SAMP:ID")
    port = in_process_port("hotplate")
    driver = SerialInstrumentDriver(SerialInstrumentConfig.model_validate(with_set), port=port)
    driver.run(ANNEAL, context(StationClock(0.0), trial_id=302)[0])
    assert "SAMP:ID 302;SOUR:TEMP 140.0" in port.device.commands
    literal = SerialInstrumentConfig.model_validate({**base, "start": ["SAMP:ID {sample}", "INIT {{now}}"]})
    assert literal.start[1].format(sample=1) == "INIT {now}"
    for key, value, where in (("start", ["SAMP:ID {trial}", "INIT"], ("start", 0)),
                              ("set", {"anneal_temp": "SOUR:TEMP {value} {run}"}, ("set", "anneal_temp", "command"))):
        with pytest.raises(ValueError) as refused:
            SerialInstrumentConfig.model_validate({**base, key: value})
        error = refused.value.errors()[0]  # type: ignore[attr-defined]
        assert error["loc"] == where and "{sample}" in error["msg"]


def test_trmc_line_mode_takes_no_process_parameters() -> None:
    options = TrmcOptions(sample_from="line")
    assert driver_entry("trmc").describe(options) is TRMC_LINE_DESCRIPTION
    assert driver_entry("trmc").describe(TrmcOptions()).envelope.limits.keys() >= set(BLEND)
    driver = TrmcDriver("sim://trmc", options, port=in_process_port("trmc"))
    driver.check({"averages": 32})
    with pytest.raises(EnvelopeViolation, match="declares no such setting"):
        driver.check(BLEND)
    with pytest.raises(EnvelopeViolation, match="needs it for every film"):
        TrmcDriver("sim://trmc", port=in_process_port("trmc")).check({"averages": 32})


def test_a_film_the_line_never_coated_is_an_instrument_fault_naming_the_sample() -> None:
    driver = TrmcDriver("sim://trmc", {**FAST_TRMC, "sample_from": "line"}, port=in_process_port("trmc"))
    with pytest.raises(InstrumentFault, match="sample 999999 unknown to the line"):
        driver.run({}, context(StationClock(0.0), trial_id=999999)[0])


def test_coat_anneal_measure_over_ptys_measures_as_the_one_instrument_station() -> None:
    ledger, trial = FilmLedger(), 7
    models = [OpvRobotModel(ScaledClock(TIME_SCALE), 4, ledger), HotplateModel(ScaledClock(TIME_SCALE), 4, ledger),
              TrmcWireModel(ScaledClock(TIME_SCALE), 4, ledger)]
    servers = [PtyServer(Device(m)).start() for m in models]
    drivers: list[Any] = [OpvRobotDriver(servers[0].path, FAST_ROBOT),
                          SerialInstrumentDriver(hotplate_section(servers[1].path)),
                          TrmcDriver(servers[2].path, {**FAST_TRMC, "sample_from": "line"})]
    try:
        coated = drivers[0].run(BLEND, context(ScaledClock(TIME_SCALE), trial)[0])
        annealed = drivers[1].run(ANNEAL, context(ScaledClock(TIME_SCALE), trial)[0])
        measured, journal = context(ScaledClock(TIME_SCALE), trial)
        on_line = drivers[2].run({}, measured)
    finally:
        for driver in drivers:
            driver.close()
        for server in servers:
            server.stop()
    assert coated.status == annealed.status == on_line.status == "ok"
    sent = [t for d, t in journal if d == "tx"]
    assert "SAMP:ID 7" in sent and not any(t.startswith(("SAMP:PREP", "SAMP:ACC")) for t in sent)
    assert on_line.duration_s >= 270.0 + 20.0
    # The same film made by the one-instrument station (same seed, same trial id: same scatter and cavity).
    port = in_process_port("trmc", seed=4)
    measured_alone = TrmcDriver("sim://trmc", FAST_TRMC, port=port).run({**BLEND, **ANNEAL}, context(StationClock(0.0), trial)[0])
    alone = port.device.model
    assert isinstance(alone, TrmcWireModel) and alone.last_transient is not None
    line_truth, alone_truth = models[2].last_transient.truth, alone.last_transient.truth  # type: ignore[attr-defined]
    assert line_truth == alone_truth
    assert TrmcProcessModel().truth(ledger.film(trial).conditions()) == TrmcProcessModel().truth({**BLEND, **ANNEAL})  # type: ignore[union-attr]
    for name in ("phi_sum_mu_max", "tau_half"):
        assert on_line.values[name] == pytest.approx(measured_alone.values[name], rel=0.02)


def test_robot_driver_against_closedloop_emulate_in_its_own_process() -> None:
    with emulator_process("opv_robot", "--time-scale", "7200", "--seed", "3") as path:
        driver = OpvRobotDriver(path, FAST_ROBOT)
        try:
            measurement = driver.run(BLEND, context(ScaledClock(TIME_SCALE), trial_id=5)[0])
        finally:
            driver.close()
    assert measurement.status == "ok" and 100.0 < measurement.values["thickness"] < 120.0
