"""Whole campaigns through the generic serial driver, configured only by protocols/serial_furnace.yaml:
the furnace emulator in process (sim://furnace or --sim, virtual time), and behind a real pseudo-terminal
served by `closedloop emulate` in another process (wall clock, `closedloop run` as a subprocess).

Every measured value is checked against the furnace's noise-free physics at that trial's own conditions,
so a reply read into the wrong trial (or the wrong unit on the wire) fails the test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from closedloop.controller.engine.clock import StationClock
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.engine.stations import InstrumentUnavailable, make_stations
from closedloop.controller.protocol.model import ProtocolError, load_protocol
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.reads import TrialRecord
from closedloop.drivers.base import InstrumentContext
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.simulators.furnace import R_MIN, sheet_resistance
from tests import paths
from tests.emulated import emulator_process

ROOT = paths.ROOT
EXAMPLE = ROOT / "protocols" / "serial_furnace.yaml"


def furnace_protocol(tmp_path: Path, *, trials: int = 6, initial: int = 3, name: str = "furnace.yaml",
                     replace: tuple[tuple[str, str], ...] = (), **settings: str) -> Path:
    """A copy of the example protocol with a small budget. `settings` set one-line keys of the instrument
    section (connection, wait, serial, options) or `failures`; `replace` edits any other text."""
    text = _edit(EXAMPLE.read_text(), "budget: {trials: 30, wall_time: 3 day}", f"budget: {{trials: {trials}}}")
    text = _edit(text, "initial: {method: sobol, n: 6}", f"initial: {{method: sobol, n: {initial}}}")
    for old, new in replace:
        text = _edit(text, old, new)
    for key, value in settings.items():
        indent = "" if key == "failures" else "  "
        line = next((ln for ln in text.splitlines() if ln.startswith(f"{indent}{key}:")), None)
        if line is None:
            text = _edit(text, "  driver: serial\n", f"  driver: serial\n  {key}: {value}\n")
        else:
            text = _edit(text, line, f"{indent}{key}: {value}")
    path = tmp_path / name
    path.write_text(text)
    return path


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is not in the example protocol any more"
    return text.replace(old, new, 1)


def assert_values_match_their_own_conditions(trials: list[TrialRecord]) -> None:
    """The mean of 8 probe readings with 2.5 % noise each is within ~1 % of the physics; 6 % is a wide margin
    that a value belonging to another trial (or a dwell sent in minutes instead of seconds) does not meet."""
    for t in trials:
        expected = sheet_resistance(t.conditions["anneal_temp"], t.conditions["anneal_time"], t.conditions["gas_flow"])
        assert t.values["sheet_resistance"] == pytest.approx(expected, rel=0.06), f"trial {t.id}: {t.conditions}"


def assert_commands_journaled(store: CampaignStore, trial: TrialRecord) -> None:
    """The trial's own setpoints went out in the instrument's units, and the reading came back to it."""
    lines = [(c["direction"], c["text"]) for c in store.commands(trial.id)]
    sent = [text for direction, text in lines if direction == "tx"]
    c = trial.conditions
    assert f"SOUR:TEMP {c['anneal_temp']:.1f}" in sent
    assert f"SOUR:DWEL {c['anneal_time'] * 60:.0f}" in sent  # minutes in the protocol, seconds on the wire
    assert f"SOUR:FLOW {c['gas_flow']:.1f}" in sent
    assert sent.index("INIT") < sent.index("FETC:RES?")
    assert ("rx", "IDLE") in lines
    direction, reply = lines[lines.index(("tx", "FETC:RES?")) + 1]
    assert direction == "rx" and float(reply) == trial.values["sheet_resistance"]


# -- in process: sim://furnace, virtual time -------------------------------------------------------


def test_sim_furnace_campaign_runs_the_real_driver_in_virtual_time(tmp_path: Path) -> None:
    started = time.monotonic()
    with Campaign.create(furnace_protocol(tmp_path, trials=5), tmp_path / "c.sqlite") as c:
        assert c.run().kind is HaltKind.BUDGET
        trials = c.store.trials()
        assert [t.state for t in trials] == ["measured"] * 5
        assert_values_match_their_own_conditions(trials)
        for t in trials:
            assert_commands_journaled(c.store, t)
            # The driver waited out the ramp and the dwell on the trial's virtual clock.
            assert t.duration_s >= 60 * t.conditions["anneal_time"]
        virtual_hours = sum(t.duration_s for t in trials) / 3600
        assert c.store.commands(1)[0]["text"] == "*IDN?"
    assert virtual_hours > 2 and time.monotonic() - started < 120


def test_sim_flag_puts_the_furnace_emulator_behind_a_real_device_path(tmp_path: Path) -> None:
    protocol = furnace_protocol(tmp_path, trials=4, initial=3, connection="/dev/ttyUSB9")
    stations = make_stations(load_protocol(protocol), seed=0, sim=True)
    assert [s.name for s in stations] == ["furnace"] and stations[0].virtual is True
    (station,) = make_stations(load_protocol(protocol), seed=0, sim=False)
    live = station.driver
    assert isinstance(live, SerialInstrumentDriver) and station.virtual is False
    assert live.transport.url == "/dev/ttyUSB9" and not live.transport.is_open  # nothing opened yet

    result = CliRunner().invoke(main, ["run", str(protocol), "--sim", "--quiet", "--db", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    with Campaign.open(tmp_path / "s.sqlite") as c:
        trials = c.store.trials()
        assert [t.state for t in trials] == ["measured"] * 4 and {t.instrument for t in trials} == {"furnace"}
        assert_values_match_their_own_conditions(trials)


def test_conditions_reach_the_driver_in_the_units_it_expects(tmp_path: Path) -> None:
    # The envelope says hours: the protocol's minutes are converted for the driver, which sends seconds.
    hours = (("anneal_time: {min: 0, max: 240, unit: min}", "anneal_time: {min: 0, max: 4, unit: h}"),)
    protocol = load_protocol(furnace_protocol(tmp_path, replace=hours))
    sent = protocol.to_instrument_units({"anneal_temp": 350.0, "anneal_time": 30.0, "gas_flow": 50.0})
    assert sent["anneal_time"] == pytest.approx(0.5)
    assert make_stations(protocol, seed=0, sim=False)[0].driver.describe() == protocol.description_of_instrument()
    driver = make_stations(protocol, seed=0, sim=True)[0].driver
    journal: list[tuple[str, str]] = []
    context = InstrumentContext(clock=StationClock(0.0), trial_id=1, journal=lambda d, text: journal.append((d, text)))
    measurement = driver.run(sent, context)
    assert ("tx", "SOUR:DWEL 1800") in journal
    assert measurement.values["sheet_resistance"] == pytest.approx(R_MIN, rel=0.05)  # the furnace's optimum


def test_an_in_process_fault_abandons_the_trial_journals_it_and_retries(tmp_path: Path) -> None:
    # syst_err: the first error query from the 40th command on reports -222: in trial 1, after its anneal
    # (polled once per 30 s), when the reading is checked.
    path = furnace_protocol(tmp_path, trials=4, options='{faults: "syst_err:once@40"}',
                            failures="{instrument_fault_retries: 1, on_fault: pause}")
    with Campaign.create(path, tmp_path / "f.sqlite") as c:
        assert c.run().kind is HaltKind.BUDGET
        trials = c.store.trials()
        (abandoned,) = [t for t in trials if t.state == "abandoned"]
        assert abandoned.id == 1 and abandoned.values == {}
        (fault,) = c.store.events(trial_id=abandoned.id, kinds=["fault"])
        assert '-222,"Data out of range"' in fault["detail"]
        assert ("rx", '-222,"Data out of range"') in [(x["direction"], x["text"]) for x in c.store.commands(abandoned.id)]
        (retry,) = [t for t in trials if t.retry_of == abandoned.id]
        assert retry.state == "measured" and retry.conditions == abandoned.conditions and retry.attempt == 2
        measured = [t for t in trials if t.state == "measured"]
        assert len(measured) == 4
        assert_values_match_their_own_conditions(measured)


def test_a_silent_instrument_pauses_the_campaign_per_the_fault_policy(tmp_path: Path) -> None:
    path = furnace_protocol(tmp_path, options='{faults: "no_reply:1.0"}',
                            failures="{instrument_fault_retries: 0, on_fault: pause}")
    started = time.monotonic()
    with Campaign.create(path, tmp_path / "p.sqlite") as c:
        halt = c.run()
        assert halt.paused and halt.text.startswith("paused: instrument fault on trial 1")
        assert time.monotonic() - started < 60  # no wall-clock timeouts against an in-process device
        assert c.store.campaign()["status"] == "paused"
        (trial,) = c.store.trials()
        assert trial.state == "abandoned" and trial.values == {}
        assert "no usable reply to '*IDN?'" in c.store.events(trial_id=1, kinds=["fault"])[0]["detail"]


def test_unknown_emulators_and_fault_specs_are_refused_before_the_campaign(tmp_path: Path) -> None:
    with pytest.raises(InstrumentUnavailable, match="options.faults and options.stations apply to an emulated instrument"):
        make_stations(load_protocol(furnace_protocol(tmp_path, connection="/dev/ttyUSB9", options="{faults: 'no_reply:0.1'}")),
                      seed=0, sim=False)
    with pytest.raises(ProtocolError, match="unknown fault 'no_replies'") as refused:  # refused when read
        load_protocol(furnace_protocol(tmp_path, options="{faults: 'no_replies:0.1'}"))
    assert refused.value.problems[0].field == "instrument.options.faults"


@pytest.mark.parametrize(("example", "driver_class"), [("trmc_opv_blend.yaml", "TrmcDriver"),
                                                      ("mbe_srruo3.yaml", "MbeDriver")])
def test_other_sim_connections_still_run_their_simulators(example: str, driver_class: str) -> None:
    (station,) = make_stations(load_protocol(ROOT / "protocols" / example), seed=1, sim=False)
    assert type(station.driver).__name__ == driver_class and station.virtual is True


# -- over a real pty: `closedloop emulate furnace --pty` and `closedloop run`, wall clock -----------


def emulator(*args: str) -> AbstractContextManager[str]:
    """`closedloop emulate furnace --pty ...` in its own process; yields the path it prints."""
    return emulator_process("furnace", *args)


def run_over_pty(tmp_path: Path, path: str, *, trials: int, initial: int, **settings: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`closedloop run` on a copy of the example whose connection is the emulator's pty. At 36000 emulated
    seconds per second a two-hour anneal takes 0.2 s of wall time, so the wait polls every 20 ms."""
    protocol = furnace_protocol(tmp_path, trials=trials, initial=initial, connection=path,
                                wait='{query: "STAT:OPER?", until: "^IDLE", poll: 0.02 s, timeout: 30 s}',
                                serial='{baudrate: 9600, terminator: "\\n", timeout: 0.5 s}', **settings)
    db = tmp_path / "live.sqlite"
    done = subprocess.run([sys.executable, "-m", "closedloop", "run", str(protocol), "--db", str(db), "--quiet"],
                          capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    return done, db


@pytest.mark.slow
def test_a_botorch_campaign_over_a_real_pty_finds_the_low_resistance_region(tmp_path: Path) -> None:
    with emulator("--time-scale", "36000", "--seed", "5") as path:
        done, db = run_over_pty(tmp_path, path, trials=10, initial=4)
    assert done.returncode == 0, done.stderr
    assert "stopped: budget: 10 of 10 trials done" in done.stdout
    with Campaign.open(db) as c:
        trials = c.store.trials()
        assert [t.state for t in trials] == ["measured"] * 10
        assert {t.instrument for t in trials} == {"serial"}
        identity = c.store.commands(1)[:2]
        assert [(x["direction"], x["text"]) for x in identity] == [("tx", "*IDN?"), ("rx", "KILNCO,TF-1200,SN001,1.0")]
        assert all(e["virtual_t"] is None for e in c.store.events())  # the wall clock, not a simulation
        assert_values_match_their_own_conditions(trials)
        for t in trials:
            assert_commands_journaled(c.store, t)
        values = [t.values["sheet_resistance"] for t in trials]
        # 4 Sobol points span 50..6000 ohm; the GP phase must beat them and come within 2x of R_MIN (42).
        assert min(values[4:]) < min(values[:4])
        assert min(values) < 2 * R_MIN


@pytest.mark.slow
def test_faults_on_the_wire_end_in_a_journaled_abandoned_trial_and_a_retry(tmp_path: Path) -> None:
    # An error in the queue (a refused command) abandons a trial; lost replies cost a 0.5 s timeout each and
    # are asked again by the transport (queries only, up to twice), so they almost never abandon one.
    with emulator("--time-scale", "36000", "--faults", "syst_err:once@30,no_reply:0.08", "--seed", "2") as path:
        done, db = run_over_pty(tmp_path, path, trials=5, initial=3, name="faulty.yaml",
                                failures="{instrument_fault_retries: 3, on_fault: pause}")
    assert done.returncode in (0, 1), done.stderr  # finished, or paused once the retries ran out: never a crash
    with Campaign.open(db) as c:
        trials = c.store.trials()
        abandoned = [t for t in trials if t.state == "abandoned"]
        assert abandoned, "the injected error reply should have abandoned a trial"
        for t in abandoned:
            assert t.values == {} and c.store.events(trial_id=t.id, kinds=["fault"])
        assert any('-222,"Data out of range"' in e["detail"] for e in c.store.events(kinds=["fault"]))
        first = abandoned[0]
        assert [t.conditions for t in trials if t.retry_of == first.id] == [first.conditions]
        lines = [(x["direction"], x["text"]) for x in c.store.commands()]
        asked_again = [a for a, b in zip(lines, lines[1:], strict=False) if a == b and a[0] == "tx" and a[1].endswith("?")]
        assert asked_again, "a lost reply should have been asked for again after the timeout"
        measured = [t for t in trials if t.state == "measured"]
        assert_values_match_their_own_conditions(measured)
        if done.returncode == 0:
            assert len(measured) == 5
        else:
            assert c.store.campaign()["status"] == "paused" and "paused" in done.stderr
