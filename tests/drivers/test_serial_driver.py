"""The generic serial driver, configured only by a protocol's `instrument` section, against the furnace
emulator: in process (sim://, virtual time) and over a real pseudo-terminal (wall time, scaled)."""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from closedloop.controller.engine.clock import StationClock, WallClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock, TcpServer
from closedloop.simulators.faults import FaultInjector
from closedloop.simulators.furnace import IDN, R_MIN, FurnaceModel, sheet_resistance
from closedloop.simulators.registry import in_process_port
from tests import paths

OPTIMUM = {"anneal_temp": 350.0, "anneal_time": 30.0, "gas_flow": 50.0}

# The instrument section the example protocol uses (see DESIGN.md), with short link timeouts for tests.
FURNACE_SECTION: dict[str, Any] = {
    "driver": "serial",
    "connection": "sim://furnace",
    "serial": {"baudrate": 9600, "terminator": "\r\n", "timeout": "0.25 s", "retry_backoff": "0.02 s",
               "reconnect_backoff": "0.05 s"},
    "identify": {"query": "*IDN?", "expect": "KILNCO,TF-1200"},
    "setup": ["*CLS", "CONF:RES"],
    "set": {
        "anneal_temp": "SOUR:TEMP {value:.1f}",
        "anneal_time": {"command": "SOUR:DWEL {value:.0f}", "unit": "s"},
        "gas_flow": "SOUR:FLOW {value:.2f}",
    },
    "start": "INIT",
    "wait": {"query": "STAT:OPER?", "until": "^IDLE", "poll": "1 min", "timeout": "4 h"},
    "measure": {"sheet_resistance": {"query": "FETC:RES?", "parse": "float", "unit": "ohm"}},
    "error_query": "SYST:ERR?",
    "safe_state": ["SOUR:TEMP 25", "ABOR"],
    "envelope": {
        "anneal_temp": {"min": 20, "max": 450, "unit": "degC", "max_step": 200},
        "anneal_time": {"min": 1, "max": 120, "unit": "min"},
        "gas_flow": {"min": 0, "max": 500, "unit": "sccm"},
    },
}


def furnace_config(**changes: Any) -> SerialInstrumentConfig:
    section = copy.deepcopy(FURNACE_SECTION)
    section.update(changes)
    return SerialInstrumentConfig.model_validate(section)


def wall_time_config(url: str, **changes: Any) -> SerialInstrumentConfig:
    """For a real pty/TCP emulator running 36000x faster than the wall clock the driver waits on."""
    wait = {"query": "STAT:OPER?", "until": "^IDLE", "poll": "0.02 s", "timeout": "5 s"}
    return furnace_config(connection=url, wait=wait, **changes)


class Journal(list[tuple[str, str]]):
    def __call__(self, direction: str, text: str) -> None:
        self.append((direction, text))

    def sent(self) -> list[str]:
        return [text for direction, text in self if direction == "tx"]


def sim_driver(config: SerialInstrumentConfig | None = None, seed: int = 0) -> SerialInstrumentDriver:
    return SerialInstrumentDriver(config or furnace_config(), port=in_process_port("furnace", seed=seed))


def context(clock: Any, journal: Journal | None = None, trial_id: int = 1) -> InstrumentContext:
    return InstrumentContext(clock=clock, trial_id=trial_id, journal=journal if journal is not None else Journal())


# -- configuration ---------------------------------------------------------------------------------


def test_the_design_sketch_section_validates_with_units_and_durations() -> None:
    config = furnace_config()
    assert config.serial.to_transport().read_terminator == "\r\n"
    assert config.wait is not None and config.wait.timeout == 4 * 3600 and config.wait.poll == 60
    assert config.parameter_unit("anneal_time") == "min"  # conditions arrive in the envelope's unit
    assert config.set["anneal_time"].unit == "s"  # and are sent in the command's


@pytest.mark.parametrize(
    ("changes", "location", "message"),
    [
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"set": {"anneal_temp": "SOUR:TEMP {val}"}}, "set.anneal_temp.command", "exactly one '{value}'"),
        ({"set": {"anneal_temp": "SOUR:TEMP {value:.1q}"}}, "set.anneal_temp.command", "bad format spec"),
        ({"measure": {"r": {"query": "R?", "parse": "regex"}}}, "measure.r", "needs a `pattern`"),
        ({"measure": {"r": {"query": "R?", "parse": "blob"}}}, "measure.r.parse", "'float', 'int', 'list', 'regex' or 'block'"),
        ({"measure": {}}, "measure", "needs a measure section"),
        ({"measure": {"r": {"query": "R?", "parse": "list", "pattern": "R=(.*)"}}}, "measure.r", "cannot be used with parse: list"),
        ({"envelope": {"anneal_temp": {"max": "450 degC"}}}, "envelope.anneal_temp.max", "the limit needs one"),
        ({"envelope": {"anneal_temp": {"unit": "degC", "max": "2 h"}}}, "envelope.anneal_temp.max", "different dimensions"),
        ({"envelope": {"oven_temp": {"max": 3}}}, "envelope", "envelope names ['oven_temp']"),
        ({"envelope": {"anneal_temp": {"min": 500, "max": 20}}}, "envelope.anneal_temp", "min 500.0 is above max 20.0"),
        ({"envelope": {"anneal_temp": {"unit": "degX"}}}, "envelope.anneal_temp.unit", "unknown unit 'degX'"),
        ({"envelope": {"anneal_time": {"unit": "degC"}}}, "envelope", "cannot be converted to the command's unit 's'"),
        ({"serial": {"timeout": "2 parsec"}}, "serial.timeout", "not a duration"),
        ({"serial": {"timeout": 0}}, "serial.timeout", "longer than 0 s"),
        ({"serial": {"parity": "maybe"}}, "serial.parity", "'none', 'even', 'odd', 'mark' or 'space'"),
        ({"wait": {"duration": "1 min", "query": "X?"}}, "wait", "exactly one of"),
        ({"wait": {"query": "STAT:OPER?"}}, "wait", "needs `until`"),
        ({"wait": {"duration_from": "gas_flow"}}, "wait", "has no time unit"),
        ({"wait": {"duration_from": "spin"}}, "wait", "not a `set` parameter"),
        ({"identify": {"query": "*IDN?", "expect": "KILN("}}, "identify.expect", "not a valid regular expression"),
        ({"setup": ["SOUR:TEMP 25 °C"]}, "", "cannot be sent in the line's encoding 'ascii'"),
    ],
)
def test_bad_sections_name_the_field_and_say_what_to_write(changes: dict[str, Any], location: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        furnace_config(**changes)
    errors = info.value.errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [location]
    assert message in errors[0]["msg"]


def test_shorthands_and_escaped_terminators() -> None:
    config = furnace_config(
        serial={"terminator": "\\r\\n", "parity": "E"}, identify="*IDN?", measure={"r": "FETC:RES?"},
        start=["INIT"], safe_state="ABOR", wait="10 min",
    )
    assert config.serial.terminator == "\r\n"
    assert config.serial.to_transport().parity == "E"
    assert config.wait is not None and config.wait.duration == 600
    assert config.identify is not None and config.identify.query == "*IDN?" and config.identify.expect is None
    assert config.measure["r"].parse == "float"
    assert config.safe_state == ["ABOR"]


def test_limits_written_with_units_are_converted_into_the_limit_unit() -> None:
    envelope = {"anneal_temp": {"unit": "degC", "min": "293.15 K", "max": "450 degC", "max_step": "360 degF"}}
    limit = furnace_config(envelope=envelope).describe().envelope.limits["anneal_temp"]
    assert limit.min == pytest.approx(20.0) and limit.max == pytest.approx(450.0)
    assert limit.max_step == pytest.approx(200.0)  # a step is a difference: no degF offset


def test_whole_numbers_patterns_and_a_fixed_delay_before_polling() -> None:
    measure = {
        "complete": {"query": "*OPC?", "parse": "int"},
        "summary": {"query": "FETC:RES:SUMM?", "pattern": r"RS=([-+.0-9eE]+)", "unit": "ohm"},
    }
    wait = {"delay": "20 min", "query": "STAT:OPER?", "until": "^IDLE", "poll": "1 min", "timeout": "4 h"}
    journal = Journal()
    m = sim_driver(furnace_config(measure=measure, wait=wait)).run(OPTIMUM, context(StationClock(0.0), journal))
    assert m.values["complete"] == 1.0
    assert m.values["summary"] == pytest.approx(R_MIN, rel=0.05)
    # The anneal takes ~46 min; after a 20 min delay, polling once a minute asks ~27 times, not ~47.
    assert 25 <= journal.sent().count("STAT:OPER?") <= 29
    with pytest.raises(InstrumentFault, match="expected a whole number"):
        sim_driver(furnace_config(measure={"r": {"query": "FETC:RES?", "parse": "int"}})).run(OPTIMUM, context(StationClock(0.0)))

def test_the_example_protocol_drives_the_furnace_emulator() -> None:
    protocol = YAML(typ="safe").load((paths.PROTOCOLS / "serial_furnace.yaml").read_text())
    config = SerialInstrumentConfig.model_validate(protocol["instrument"])
    driver = SerialInstrumentDriver(config, port=in_process_port("furnace", seed=0))
    measurement = driver.run(OPTIMUM, context(StationClock(0.0)))
    assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)


# -- describe / check ------------------------------------------------------------------------------


def test_describe_gives_every_set_parameter_a_limit_with_bounds_only_where_declared() -> None:
    envelope = {"anneal_temp": {"min": 20, "max": 450, "unit": "degC", "max_step": 200}}
    description = sim_driver(furnace_config(envelope=envelope)).describe()
    limits = description.envelope.limits
    assert description.name == "serial"
    assert set(limits) == {"anneal_temp", "anneal_time", "gas_flow"}
    assert (limits["anneal_temp"].min, limits["anneal_temp"].max, limits["anneal_temp"].max_step) == (20, 450, 200)
    assert (limits["gas_flow"].min, limits["gas_flow"].max, limits["gas_flow"].unit) == (None, None, "")
    assert limits["anneal_time"].unit == "s"  # no envelope entry: the command's unit
    assert description.measures == {"sheet_resistance": "ohm"}


@pytest.mark.parametrize(
    ("conditions", "parameter", "reason"),
    [
        ({"anneal_temp": 451.0, "anneal_time": 30, "gas_flow": 2}, "anneal_temp", "above the maximum 450"),
        ({"anneal_temp": 300.0, "anneal_time": 0.5, "gas_flow": 2}, "anneal_time", "below the minimum 1"),
        ({"anneal_temp": 300.0, "anneal_time": 30, "gas_flow": 2, "rpm": 1}, "rpm", "declares no such setting"),
    ],
)
def test_out_of_envelope_is_refused_before_a_byte_is_written(conditions: dict[str, float], parameter: str, reason: str) -> None:
    device = Device(FurnaceModel(ScaledClock(), seed=0))
    with PtyServer(device) as server:
        driver = SerialInstrumentDriver(wall_time_config(server.path))
        with pytest.raises(EnvelopeViolation, match=reason) as info:
            driver.run(conditions, context(WallClock()))
        assert info.value.parameter == parameter
        time.sleep(0.05)
        assert device.commands == []
        driver.close()


def test_a_value_its_template_cannot_format_is_refused_before_sending() -> None:
    envelope = {**FURNACE_SECTION["envelope"], "gas_flow": {"allowed": ["low", "high"]}}
    driver = sim_driver(furnace_config(envelope=envelope))
    with pytest.raises(EnvelopeViolation, match="cannot be written into the command 'SOUR:FLOW {value:.2f}'"):
        driver.check({**OPTIMUM, "gas_flow": "low"})


def test_max_step_is_checked_against_the_last_setpoint_actually_sent() -> None:
    driver = sim_driver()
    clock = StationClock(0.0)
    driver.run(OPTIMUM, context(clock))
    with pytest.raises(EnvelopeViolation, match="step from 350.0 exceeds max_step 200"):
        driver.check({**OPTIMUM, "anneal_temp": 100.0})
    driver.check({**OPTIMUM, "anneal_temp": 150.0})  # exactly 200 away: allowed


def test_an_unconfirmed_setpoint_keeps_both_values_for_the_step_check() -> None:
    port = in_process_port("furnace", seed=0)
    driver = SerialInstrumentDriver(furnace_config(), port=port)
    driver.run({**OPTIMUM, "anneal_temp": 150.0}, context(StationClock(0.0)))
    # The next trial's error query after SOUR:TEMP 350.0 reports an error: did the furnace take 350 or not?
    n = len(port.device.commands)
    port.device.faults = FaultInjector(f"syst_err:once@{n + 6}")  # after *IDN? is skipped: SYST:ERR? *CLS SYST:ERR? CONF:RES SYST:ERR? SOUR:TEMP
    with pytest.raises(InstrumentFault, match="after 'SOUR:TEMP 350.0'"):
        driver.run(OPTIMUM, context(StationClock(1e4)))
    with pytest.raises(EnvelopeViolation, match="step from 150.0 exceeds max_step 200"):
        driver.check({**OPTIMUM, "anneal_temp": 450.0})  # fine from 350, too far from 150
    driver.check({**OPTIMUM, "anneal_temp": 300.0})  # fine from either


def test_min_interval_between_setpoint_changes() -> None:
    section_envelope = {**FURNACE_SECTION["envelope"], "min_interval": "2 h"}
    driver = sim_driver(furnace_config(envelope=section_envelope))
    first = StationClock(0.0)
    driver.run(OPTIMUM, context(first))  # takes ~46 virtual minutes
    later = StationClock(first.now())
    with pytest.raises(EnvelopeViolation, match="only every 7200 s"):
        driver.run({**OPTIMUM, "gas_flow": 80.0}, context(later))
    assert driver.run(OPTIMUM, context(later)).status == "ok"  # unchanged setpoints are not a change
    much_later = StationClock(2 * 3600.0 + 1)
    assert driver.run({**OPTIMUM, "gas_flow": 80.0}, context(much_later)).status == "ok"


# -- running trials --------------------------------------------------------------------------------


def test_in_process_trial_in_virtual_time_reaches_the_known_optimum() -> None:
    journal = Journal()
    clock = StationClock(1000.0)
    started = time.monotonic()
    measurement = sim_driver(seed=4).run(OPTIMUM, context(clock, journal))
    assert time.monotonic() - started < 2.0  # a 46-minute anneal, in virtual time
    assert measurement.status == "ok"
    assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)
    assert measurement.units == {"sheet_resistance": "ohm"}
    assert (measurement.instrument, measurement.analysis) == (IDN, "scpi-query")
    # ramp 25 -> 350 degC at 20 degC/min, then the 30 min dwell; polled once a minute.
    assert 16.25 * 60 + 1800 <= measurement.duration_s <= 16.25 * 60 + 1800 + 60
    sent = journal.sent()
    assert sent[:3] == ["*IDN?", "SYST:ERR?", "*CLS"]  # errors left from before the trial are cleared first
    assert "SOUR:DWEL 1800" in sent  # 30 min converted to seconds by the driver
    assert "SOUR:TEMP 350.0" in sent and "SOUR:FLOW 50.00" in sent
    assert sent.index("SOUR:FLOW 50.00") < sent.index("INIT") < sent.index("FETC:RES?")
    # Every command without a reply is followed by an error query.
    for command in ("*CLS", "CONF:RES", "SOUR:TEMP 350.0", "INIT"):
        assert sent[sent.index(command) + 1] == "SYST:ERR?"


def test_sheet_resistance_rises_away_from_the_optimum() -> None:
    driver = sim_driver(seed=1)
    clock = StationClock(0.0)
    best = driver.run(OPTIMUM, context(clock)).values["sheet_resistance"]
    worse = driver.run({"anneal_temp": 200.0, "anneal_time": 5.0, "gas_flow": 150.0}, context(StationClock(clock.now())))
    expected = sheet_resistance(200.0, 5.0, 150.0)
    assert worse.values["sheet_resistance"] == pytest.approx(expected, rel=0.05)
    assert worse.values["sheet_resistance"] > 5 * best


def test_list_regex_and_block_parsing_agree_with_the_plain_reading() -> None:
    measure = {
        "mean": {"query": "FETC:RES?", "unit": "ohm"},
        "listed": {"query": "FETC:RES:LIST?", "parse": "list", "unit": "ohm"},
        "summary": {"query": "FETC:RES:SUMM?", "parse": "regex", "pattern": r"RS=([-+.0-9eE]+)", "unit": "ohm"},
        "trace": {"query": "TRAC:DATA?", "parse": "block", "dtype": "<f4", "reduce": "max", "unit": "ohm"},
    }
    m = sim_driver(furnace_config(measure=measure)).run(OPTIMUM, context(StationClock(0.0)))
    assert m.values["listed"] == pytest.approx(m.values["mean"], rel=1e-5)
    assert m.values["summary"] == pytest.approx(m.values["mean"], rel=1e-5)
    assert m.artifacts["listed"].shape == (8,) and m.artifacts["trace"].shape == (8,)
    assert m.values["trace"] == pytest.approx(m.artifacts["listed"].max(), rel=1e-6)


def test_trial_over_a_real_pty_in_scaled_wall_time() -> None:
    device = Device(FurnaceModel(ScaledClock(36000.0), seed=2))
    with PtyServer(device) as server:
        driver = SerialInstrumentDriver(wall_time_config(server.path))
        journal = Journal()
        measurement = driver.run(OPTIMUM, context(WallClock(), journal))
        assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)
        assert "RUNNING" in [text for d, text in journal if d == "rx"]
        driver.run(OPTIMUM, context(WallClock()))
        assert device.commands.count("*IDN?") == 1  # identified once per connection
        driver.safe_state()
        time.sleep(0.05)
        assert device.commands[-3:] == ["SOUR:TEMP 25", "ABOR", "SYST:ERR?"]
        driver.close()
        assert not driver.transport.is_open


def test_an_instrument_error_stops_the_trial_naming_the_command_and_the_reply() -> None:
    config = furnace_config(set={**FURNACE_SECTION["set"], "gas_flow": "SOUR:GAS {value:.2f}"})
    with pytest.raises(InstrumentFault, match=r"""after 'SOUR:GAS 50.00': -113,"Undefined header;SOUR:GAS 50.00\""""):
        sim_driver(config).run(OPTIMUM, context(StationClock(0.0)))


def test_wrong_instrument_is_refused_at_identification() -> None:
    config = furnace_config(identify={"query": "*IDN?", "expect": "^ACME,OVEN"})
    journal = Journal()
    with pytest.raises(InstrumentFault, match="does not match the expected '\\^ACME,OVEN'"):
        sim_driver(config).run(OPTIMUM, context(StationClock(0.0), journal))
    assert journal.sent() == ["*IDN?"]


def test_wait_timeout_is_an_instrument_fault() -> None:
    config = furnace_config(wait={"query": "STAT:OPER?", "until": "^IDLE", "poll": "1 min", "timeout": "10 min"})
    clock = StationClock(0.0)
    with pytest.raises(InstrumentFault, match="waited 600 s for STAT:OPER\\? to match '\\^IDLE'; last reply 'RUNNING'"):
        sim_driver(config).run(OPTIMUM, context(clock))
    assert 600 <= clock.elapsed <= 660


def test_wait_duration_from_a_set_parameter() -> None:
    config = furnace_config(
        wait={"duration_from": "anneal_time"}, measure={"furnace_temp": {"query": "MEAS:TEMP?", "unit": "degC"}}
    )
    clock = StationClock(0.0)
    measurement = sim_driver(config).run({**OPTIMUM, "anneal_time": 20.0}, context(clock))
    assert clock.elapsed == pytest.approx(20 * 60)
    assert measurement.values["furnace_temp"] == pytest.approx(350.0)  # ramped up after 16 min, now dwelling


def test_an_overloaded_reading_is_a_failed_sample_not_a_number() -> None:
    # No start, so the probe has no annealed film to read: SCPI's 9.91E37 "not a number".
    config = furnace_config(start=[], wait={"duration": "1 s"}, error_query=None)
    measurement = sim_driver(config).run(OPTIMUM, context(StationClock(0.0)))
    assert measurement.status == "failed_sample"
    assert math.isnan(measurement.values["sheet_resistance"])
    assert "sheet_resistance" in measurement.detail


def test_in_process_faults_are_retried_in_virtual_time() -> None:
    port = in_process_port("furnace", seed=0, faults="no_reply:once@1,garbage:once@4,partial:once@6,slow_reply:once@8")
    driver = SerialInstrumentDriver(furnace_config(), port=port)
    started = time.monotonic()
    measurement = driver.run(OPTIMUM, context(StationClock(0.0)))
    assert time.monotonic() - started < 1.0  # no wall-clock timeouts in process
    assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)
    assert [kind for _, kind in port.device.faults.injected] == ["no_reply", "garbage", "partial", "slow_reply"]


def test_in_process_unplug_reconnects_and_abandons_the_trial() -> None:
    port = in_process_port("furnace", seed=0, faults="unplug:once@6")
    driver = SerialInstrumentDriver(furnace_config(), port=port)
    with pytest.raises(InstrumentFault, match="dropped and was re-established"):
        driver.run(OPTIMUM, context(StationClock(0.0)))
    assert driver.run(OPTIMUM, context(StationClock(1e4))).status == "ok"
    assert driver.transport.reconnects == 1


@pytest.mark.parametrize("left_by", ["safe_state", "someone else"])
def test_errors_left_in_the_queue_before_a_trial_are_not_blamed_on_its_first_command(
    caplog: pytest.LogCaptureFixture, left_by: str
) -> None:
    # No *CLS in setup: the first command's error check would read whatever the queue held.
    driver = sim_driver(furnace_config(setup=["CONF:RES"], safe_state=["SOUR:TEMP 25", "SOUR:BOGUS 1"]))
    journal = Journal()
    with caplog.at_level(logging.WARNING, logger="closedloop.drivers.serial_driver"):
        if left_by == "safe_state":
            driver.transport.open()
            driver.safe_state()
            assert "after the safe-state commands" in caplog.text and "SOUR:BOGUS 1" in caplog.text
        else:
            driver.transport.open()
            driver.transport.write("SOUR:BOGUS 2")  # e.g. typed at the front panel's remote console
        measurement = driver.run(OPTIMUM, context(StationClock(0.0), journal, trial_id=7))
    assert measurement.status == "ok"
    if left_by != "safe_state":
        assert "before trial 7" in caplog.text and "SOUR:BOGUS 2" in caplog.text
    assert journal.sent()[:2] == ["*IDN?", "SYST:ERR?"]


def test_safe_state_never_raises_even_when_the_instrument_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    server = TcpServer(Device(FurnaceModel(ScaledClock(), seed=0), faults=FaultInjector())).start()
    driver = SerialInstrumentDriver(furnace_config(connection=server.url, serial={"timeout": "0.2 s",
                                                                                 "reconnect_attempts": 1,
                                                                                 "reconnect_backoff": "0.01 s"}))
    driver.transport.open()
    server.stop()
    with caplog.at_level(logging.WARNING, logger="closedloop.drivers.serial_driver"):
        driver.safe_state()
    assert "safe_state" in caplog.text
    assert driver.recover(1, context(WallClock())) is None
    driver.close()
