"""Every injected fault, over a real pseudo-terminal or TCP port, ends in a defined outcome: retried and
recovered, or an InstrumentFault within the configured timeout; never a hang, never another exception
escaping the driver, never a reply taken for the answer to a different command."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from closedloop.controller.engine.clock import WallClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentFault
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.drivers.transport import SerialTransport, TransportSettings
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock, TcpServer
from closedloop.simulators.faults import FAULT_KINDS, FaultInjector, FaultSpecError, parse_fault_spec
from closedloop.simulators.furnace import IDN, R_MIN, FurnaceModel, sheet_resistance
from tests.drivers.test_serial_driver import OPTIMUM, Journal, context, wall_time_config

SETTINGS = TransportSettings(
    read_terminator="\r\n", write_terminator="\r\n", timeout=0.2, retries=2, retry_backoff=0.02,
    reconnect_attempts=5, reconnect_backoff=0.05,
)
MARGIN_S = 0.3
SERVERS = [PtyServer, TcpServer]
# The driver's link settings in the same terms, for the protocol section.
DRIVER_SERIAL = {"terminator": "\r\n", "timeout": "0.2 s", "retry_backoff": "0.02 s", "reconnect_attempts": 5,
                 "reconnect_backoff": "0.05 s"}


def worst_case_s(settings: TransportSettings = SETTINGS) -> float:
    """The longest one call may take: waiting out earlier late replies, every attempt timing out, back-offs."""
    attempts = 1 + settings.retries
    backoffs = sum(settings.retry_backoff * 2**i for i in range(settings.retries))
    return settings.timeout + attempts * settings.timeout + backoffs + MARGIN_S


def furnace_device(faults: str, *, seed: int = 1, **timing: float) -> Device:
    return Device(FurnaceModel(ScaledClock(36000.0), seed=seed), faults=FaultInjector(faults, seed=seed, **timing))


@contextmanager
def linked(device: Device, server_type: type[PtyServer] | type[TcpServer],
           settings: TransportSettings = SETTINGS) -> Iterator[SerialTransport]:
    with server_type(device) as server:
        link = SerialTransport(server.url, settings)
        try:
            yield link
        finally:
            link.close()


# -- the spec ------------------------------------------------------------------------------------


def test_spec_grammar() -> None:
    rules = parse_fault_spec("no_reply:0.1, garbage:0.05,reset:once@5")
    assert [(r.kind, r.probability, r.once_at) for r in rules] == [
        ("no_reply", 0.1, None), ("garbage", 0.05, None), ("reset", 0.0, 5)]
    assert parse_fault_spec("") == ()
    assert set(FAULT_KINDS) == {"no_reply", "slow_reply", "garbage", "partial", "late_reply", "reset", "unplug", "syst_err"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [("no_replly:0.1", "did you mean 'no_reply'"), ("garbage", "has no rate"), ("garbage:1.5", "between 0 and 1"),
     ("reset:once@0", "counted from 1"), ("reset:twice", "neither a probability nor once@N")],
)
def test_bad_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_fault_spec(spec)


def test_seeded_faults_repeat_exactly() -> None:
    def injected(seed: int) -> list[tuple[int, str]]:
        device = furnace_device("no_reply:0.3,garbage:0.3,reset:0.1", seed=seed)
        for _ in range(50):
            device.command("*IDN?")
        return device.faults.injected

    assert injected(7) == injected(7)
    assert injected(7) != injected(8)
    assert {kind for _, kind in injected(7)} == {"no_reply", "garbage", "reset"}


# -- one fault, recovered ------------------------------------------------------------------------


@pytest.mark.parametrize("server_type", SERVERS)
@pytest.mark.parametrize("kind", ["no_reply", "slow_reply", "garbage", "partial", "late_reply"])
def test_a_single_reply_fault_is_retried_and_recovered(kind: str, server_type: type[PtyServer]) -> None:
    device = furnace_device(f"{kind}:once@1", slow_delay_s=0.3)
    with linked(device, server_type) as link:
        start = time.monotonic()
        assert link.query("*IDN?") == IDN
        assert time.monotonic() - start < worst_case_s()
        assert device.faults.injected == [(1, kind)]
        assert device.commands.count("*IDN?") >= 2  # it took a retry
        link.write("SOUR:FLOW 3.5")
        # The next, different query gets its own answer, not a straggler from the fault.
        assert link.query("SOUR:FLOW?") == "3.50"


# -- a persistent fault: InstrumentFault, on time ------------------------------------------------


@pytest.mark.parametrize("server_type", SERVERS)
@pytest.mark.parametrize(
    ("kind", "message"),
    [("no_reply", "no reply within 0.2 s"), ("slow_reply", "no reply within 0.2 s"),
     ("garbage", r"garbled reply '\\xff.*' is not valid ascii"), ("partial", r"partial reply 'KILNCO,TF-12' without the terminator")],
)
def test_a_persistent_reply_fault_raises_within_the_timeout(kind: str, message: str, server_type: type[PtyServer]) -> None:
    device = furnace_device(f"{kind}:1.0", slow_delay_s=3.0)
    with linked(device, server_type) as link:
        start = time.monotonic()
        with pytest.raises(InstrumentFault, match=message):
            link.query("*IDN?")
        assert time.monotonic() - start < worst_case_s()
        assert device.commands == ["*IDN?"] * 3  # one try and two retries, then it gives up


@pytest.mark.parametrize("server_type", SERVERS)
def test_a_late_reply_is_caught_not_taken_for_the_next_answer(server_type: type[PtyServer]) -> None:
    device = furnace_device("late_reply:once@1")
    journal = Journal()
    with linked(device, server_type, replace(SETTINGS, retries=0)) as link:
        link.set_journal(journal)
        with pytest.raises(InstrumentFault, match="no reply"):
            link.query("SOUR:TEMP?")  # its "25.0" is held back...
        # ...and comes in just ahead of the IDN: two replies for one command, so neither is trusted.
        with pytest.raises(InstrumentFault, match=r"replies out of step: '25.0' and then 'KILNCO.*' arrived for '\*IDN\?'"):
            link.query("*IDN?")
        assert any(text.startswith("[discarded: more than one reply to '*IDN?'") for _, text in journal)
        assert link.query("*IDN?") == IDN


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server_type", "echo", "slow_delay_s"),
    # Without echo the guard relies on late replies coming within a timeout of the previous one (here 1.5x
    # the timeout); with echo the instrument's own echo marks where our answer starts, however late.
    [(PtyServer, False, 0.3), (TcpServer, False, 0.3), (PtyServer, True, 1.0)],
)
def test_under_random_faults_every_answer_belongs_to_its_command(
    server_type: type[PtyServer], echo: bool, slow_delay_s: float
) -> None:
    spec = "late_reply:0.15,slow_reply:0.08,no_reply:0.08,partial:0.08,garbage:0.08"
    device = furnace_device(spec, seed=5, slow_delay_s=slow_delay_s)
    device.echo = echo
    expected = {"*IDN?": IDN, "SOUR:TEMP?": "321.0", "SOUR:FLOW?": "1.25", "SOUR:DWEL?": "900"}
    outcomes = {"right": 0, "fault": 0}
    with linked(device, server_type, replace(SETTINGS, echo=echo)) as link:
        for command in ("SOUR:TEMP 321", "SOUR:FLOW 1.25", "SOUR:DWEL 900"):
            link.write(command)
        for i in range(24):
            command = list(expected)[i % len(expected)]
            start = time.monotonic()
            try:
                reply = link.query(command)
            except InstrumentFault:
                outcomes["fault"] += 1
            else:
                assert reply == expected[command], f"{command!r} answered with {reply!r}"
                outcomes["right"] += 1
            assert time.monotonic() - start < worst_case_s()
    assert outcomes["right"] >= 12
    assert len(device.faults.injected) >= 5


# -- device resets, unplugs and error replies, seen by the driver --------------------------------
# A trial's commands: 1 *IDN?, 2 *CLS, 3 SYST:ERR?, 4 CONF:RES, 5 SYST:ERR?, 6 SOUR:TEMP 350.0, 7 SYST:ERR?, ...


def serial_driver(url: str) -> SerialInstrumentDriver:
    return SerialInstrumentDriver(wall_time_config(url, serial=DRIVER_SERIAL))


@pytest.mark.parametrize("server_type", SERVERS)
def test_a_reset_during_a_setpoint_stops_the_trial_then_the_next_trial_runs(server_type: type[PtyServer]) -> None:
    device = furnace_device("reset:once@7")  # *IDN? SYST:ERR? *CLS SYST:ERR? CONF:RES SYST:ERR? SOUR:TEMP
    with server_type(device) as server:
        driver = serial_driver(server.url)
        with pytest.raises(InstrumentFault, match=r"""after 'SOUR:TEMP 350.0': -315,"Configuration memory lost\""""):
            driver.run(OPTIMUM, context(WallClock()))
        assert device.model.setpoints.temp_c == 25.0  # the reset really forgot the setpoint
        measurement = driver.run(OPTIMUM, context(WallClock()))
        assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)
        driver.close()


def test_a_reset_that_swallows_a_query_is_retried() -> None:
    device = furnace_device("reset:once@1")
    with PtyServer(device) as server:
        driver = serial_driver(server.url)
        measurement = driver.run(OPTIMUM, context(WallClock()))
        assert measurement.instrument == IDN
        assert device.commands[:2] == ["*IDN?", "*IDN?"]
        driver.close()


def test_unplug_over_tcp_reconnects_and_the_query_recovers() -> None:
    device = furnace_device("unplug:once@2", unplug_s=0.3)
    with linked(device, TcpServer) as link:
        assert link.query("*IDN?") == IDN
        start = time.monotonic()
        assert link.query("*IDN?") == IDN  # command 2 pulls the plug; the port refuses for 0.3 s
        assert 0.3 <= time.monotonic() - start < 0.3 + 2 * SETTINGS.reconnect_backoff * 2**3
        assert link.reconnects == 1


def test_unplug_mid_trial_abandons_the_trial_and_the_next_one_runs() -> None:
    device = furnace_device("unplug:once@6", unplug_s=0.3)
    with TcpServer(device) as server:
        driver = serial_driver(server.url)
        with pytest.raises(InstrumentFault, match="dropped and was re-established during the trial"):
            driver.run(OPTIMUM, context(WallClock()))
        measurement = driver.run(OPTIMUM, context(WallClock()))
        assert measurement.status == "ok"
        assert device.commands.count("*IDN?") == 2  # a new connection is identified again
        driver.close()


def test_unplug_on_a_pty_is_a_silence_that_ends_in_a_fault_on_time() -> None:
    device = furnace_device("unplug:once@1", unplug_s=1.0)
    with linked(device, PtyServer) as link:
        start = time.monotonic()
        with pytest.raises(InstrumentFault, match="no reply within 0.2 s"):
            link.query("*IDN?")
        assert time.monotonic() - start < worst_case_s()
        time.sleep(1.0 - (time.monotonic() - start))
        assert link.query("*IDN?") == IDN  # the device is back


def test_an_error_query_reporting_an_error_names_the_command_before_it() -> None:
    device = furnace_device("syst_err:once@5")
    with PtyServer(device) as server:
        driver = serial_driver(server.url)
        with pytest.raises(InstrumentFault, match=r"""after 'CONF:RES': -222,"Data out of range\""""):
            driver.run(OPTIMUM, context(WallClock()))
        assert "INIT" not in device.commands  # nothing was started after the error
        driver.close()


@pytest.mark.slow
def test_trials_under_every_fault_end_in_a_measurement_or_an_instrument_fault() -> None:
    spec = ",".join(f"{kind}:0.02" for kind in FAULT_KINDS)
    device = furnace_device(spec, seed=11, slow_delay_s=0.3, unplug_s=0.2)
    conditions = [OPTIMUM, {"anneal_temp": 300.0, "anneal_time": 20.0, "gas_flow": 20.0},
                  {"anneal_temp": 400.0, "anneal_time": 45.0, "gas_flow": 120.0}]
    outcomes: list[str] = []
    with TcpServer(device) as server:
        driver = serial_driver(server.url)
        for i in range(9):
            setpoints = conditions[i % 3]
            try:
                measurement = driver.run(setpoints, context(WallClock()))
            except (InstrumentFault, EnvelopeViolation):
                outcomes.append("fault")
                driver.safe_state()
                continue
            expected = sheet_resistance(*setpoints.values())
            assert measurement.values["sheet_resistance"] == pytest.approx(expected, rel=0.1)
            outcomes.append("measured")
        driver.close()
    # Which command each fault hits depends on retry timing, so the split varies from run to run (5/4 in
    # most, 2/7 seen); what must hold is that the driver recovers: a correct measurement after a fault.
    assert ("fault", "measured") in set(zip(outcomes, outcomes[1:], strict=False)), outcomes
    assert outcomes.count("measured") >= 2, outcomes
    assert len({kind for _, kind in device.faults.injected}) >= 3, device.faults.injected


# -- the `emulate` command, as a real subprocess -------------------------------------------------


@contextmanager
def emulator_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the emulator printed nothing within 20 s"
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on "), first
        yield proc, first.removeprefix("listening on ")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_emulate_on_a_pty_serves_a_trial_and_exits_cleanly_on_sigterm() -> None:
    with emulator_process("furnace", "--pty", "--time-scale", "36000", "--seed", "3") as (proc, path):
        assert path.startswith("/dev/pts/")
        driver = serial_driver(path)
        measurement = driver.run(OPTIMUM, context(WallClock()))
        assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)
        driver.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_emulate_over_tcp_with_an_unplug_fault_and_sigint() -> None:
    with emulator_process("furnace", "--tcp", "0", "--faults", "unplug:once@2", "--unplug-time", "0.3") as (proc, url):
        assert url.startswith("socket://127.0.0.1:")
        link = SerialTransport(url, SETTINGS)
        assert link.query("*IDN?") == IDN
        assert link.query("*IDN?") == IDN
        assert link.reconnects == 1
        link.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0


def test_emulate_refuses_a_bad_fault_spec_with_exit_code_2() -> None:
    result = subprocess.run([sys.executable, "-m", "closedloop", "emulate", "furnace", "--faults", "garbish:0.1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "unknown fault 'garbish'" in result.stderr and "garbage" in result.stderr
