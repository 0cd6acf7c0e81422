"""The MBE walk-through of a new user, live against the emulator (issue #7): `closedloop emulate mbe --pty`
in one process, `closedloop validate / run --port --time-scale / status / resume` in others, Ctrl-C or
SIGTERM in the middle of a growth. Asserted on what the emulator says it was sent (its --record file),
on the campaign file (trial states, events, the command journal) and on exit codes.

The same path in one process (a pty served from a thread, the interrupt from `_thread.interrupt_main`)
checks the engine's abort quickly; the subprocess tests are the user's exact commands.
"""

from __future__ import annotations

import _thread
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.cli.main import main
from closedloop.controller.cli.signals import pause_on_signals
from closedloop.controller.engine.clock import OperatorAbort, WallClock
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import InstrumentFault
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.mbe_driver import HEATERS, MbeOptions
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock
from closedloop.simulators.mbe.wire import MbeWireModel, WireRecord
from tests import paths
from tests.emulated import emulator_process

ROOT = paths.ROOT
EXAMPLE = ROOT / "protocols" / "mbe_srruo3.yaml"
# 4 emulated hours per wall second: a four-hour growth stays open for a second, long enough to interrupt.
SCALE = 14400
IDLE = MbeOptions().idle
SHUTTER_DEVICES = {"SHUT:SR", "SHUT:RU", "SHUT:MAIN"}


def mbe_protocol(tmp_path: Path, *, trials: int = 3, initial: int = 2, name: str = "mbe.yaml") -> Path:
    """The example with a small budget, no wall-time budget (45 days pass in 5 minutes at this scale),
    unattended, four-hour growths, and a half-hour ex-situ measurement."""
    text = EXAMPLE.read_text()
    for old, new in (("budget: {trials: 35, wall_time: 45 day}", f"budget: {{trials: {trials}}}"),
                     ("initial: {method: sobol, n: 6}", f"initial: {{method: sobol, n: {initial}}}"),
                     ("  mode: outside_region\n", "  mode: none\n"),
                     ("growth_time:    {type: fixed, value: 60, unit: min}",
                      "growth_time:    {type: fixed, value: 240, unit: min}"),
                     ("  connection: sim://mbe ", "  options: {ex_situ_s: 1800}\n  connection: sim://mbe ")):
        assert old in text, f"{old!r} is not in the example protocol any more"
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


# -- what the emulator took ---------------------------------------------------------------------------


def growing(records: list[WireRecord]) -> bool:
    """Every shutter open after the last command to each: the film is growing."""
    last = {r.device: r.value for r in records if r.device in SHUTTER_DEVICES}
    return set(last) == SHUTTER_DEVICES and set(last.values()) == {"OPEN"}


def assert_chamber_made_safe(after: list[WireRecord], heater_targets: dict[str, float]) -> None:
    """After an abort: all shutters closed and none opened, ozone off, each heater told to ramp down to
    its idle temperature at a rate inside the envelope, and never back up."""
    shutters = [(r.device, r.value) for r in after if r.device in SHUTTER_DEVICES]
    assert {d for d, _ in shutters} == SHUTTER_DEVICES and {v for _, v in shutters} == {"CLOS"}, shutters
    ozone = [r.value for r in after if r.device == "OZONE"]
    assert ozone and set(ozone) == {0.0}, ozone
    for heater, ctrl in HEATERS.items():
        sent = [(r.field, r.value) for r in after if r.device == ctrl]
        rates = [float(v) for f, v in sent if f == "RATE"]
        setpoints = [float(v) for f, v in sent if f == "SP"]
        assert setpoints and setpoints[-1] == IDLE[heater], (heater, sent)
        assert all(sp <= heater_targets[heater] for sp in setpoints), (heater, sent)  # down, never up
        assert rates and all(0 < r <= MBE_ENVELOPE.limits[heater].max_rate for r in rates), (heater, sent)
        assert sent[0][0] == "RATE"  # the rate is set before the setpoint starts the ramp


def heater_targets(records: list[WireRecord]) -> dict[str, float]:
    return {h: max(float(r.value) for r in records if r.device == ctrl and r.field == "SP") for h, ctrl in HEATERS.items()}


def read_record(path: Path) -> list[WireRecord]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    if lines and not path.read_text().endswith("\n"):
        lines = lines[:-1]  # a line still being written
    return [WireRecord(**json.loads(line)) for line in lines]


# -- the campaign file --------------------------------------------------------------------------------


def assert_aborted_and_requeued(db: Path) -> tuple[int, int]:
    """One trial abandoned by the operator with no result, its conditions queued again as a new trial,
    the campaign paused, and the pause's safe state journaled for the campaign, not a trial."""
    with CampaignStore.open(db) as store:
        assert store.campaign()["status"] == "paused"
        trials = store.trials()
        (aborted,) = [t for t in trials if t.state == "abandoned"]
        assert aborted.values == {} and aborted.detail.startswith("operator abort")
        (event,) = store.events(kinds=["operator_abort"])
        assert event["trial_id"] == aborted.id
        (requeued,) = [t for t in trials if t.retry_of == aborted.id]
        assert requeued.state == "proposed" and requeued.origin == "retry" and requeued.conditions == aborted.conditions
        sent = [c["text"] for c in store.commands(aborted.id) if c["direction"] == "tx"]
        assert "SHUT:MAIN OPEN" in sent and "GROW:MEAS?" not in sent  # aborted during the growth itself
        (safe,) = store.events(kinds=["safe_state"])
        assert safe["trial_id"] is None and "operator interrupt" in safe["detail"]
        campaign_level = [c["text"] for c in store.commands() if c["trial_id"] is None and c["direction"] == "tx"]
        assert {"SHUT:SR CLOS", "SHUT:RU CLOS", "SHUT:MAIN CLOS", "OZONE:FLOW 0"} <= set(campaign_level)
        return aborted.id, requeued.id


def assert_resumed_to_the_end(db: Path, aborted: int, requeued: int, *, trials: int) -> None:
    with CampaignStore.open(db) as store:
        info = store.campaign()
        assert info["status"] == "stopped" and info["stop_reason"].startswith("budget")
        states = {t.id: t.state for t in store.trials()}
        assert states[aborted] == "abandoned"  # never measured, never counted
        assert states[requeued] in ("measured", "failed")  # the same growth, run again first
        results = [i for i, s in states.items() if s in ("measured", "failed")]
        assert len(results) == trials and min(results) == requeued


# -- in one process: the engine's abort, quickly ---------------------------------------------------------


@contextmanager
def pty_chamber(seed: int = 4) -> Iterator[tuple[PtyServer, MbeWireModel]]:
    model = MbeWireModel(ScaledClock(SCALE), seed=seed)
    with PtyServer(Device(model)) as server:
        yield server, model


def interrupt_when_growing(model: MbeWireModel, seen: list[int], timeout: float = 60) -> threading.Thread:
    """Ctrl-C for this process once the film is growing; `seen` gets how many records there were then."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if growing(model.record):
                time.sleep(0.05)  # some emulated minutes into the growth
                seen.append(len(model.record))
                _thread.interrupt_main()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.slow
def test_ctrl_c_mid_growth_aborts_the_trial_makes_the_chamber_safe_and_resume_reruns_it(tmp_path: Path) -> None:
    with pty_chamber() as (server, model):
        protocol = mbe_protocol(tmp_path, trials=2)  # the Sobol design only: no GP fit to wait for
        with Campaign.create(protocol, tmp_path / "c.sqlite", port=server.path) as c:
            seen: list[int] = []
            watcher = interrupt_when_growing(model, seen)
            started = time.monotonic()
            # The handlers `closedloop run` installs: without them a runner started with SIGINT ignored (a
            # background job of a non-interactive shell) would make interrupt_main do nothing.
            with pause_on_signals():
                halt = c.run(port=server.path, time_scale=SCALE)
            assert halt.paused and halt.kind is HaltKind.OPERATOR
            watcher.join(timeout=1)
            assert seen, "the growth never started"
            assert time.monotonic() - started < 60
            (link,) = c.store.events(kinds=["connection"])
            assert link["data"] == {"connection": server.path, "time_scale": SCALE}
        assert_chamber_made_safe(model.record[seen[0]:], heater_targets(model.record[: seen[0]]))
        assert not model.main_open and model.chamber.ozone_sccm == 0.0
        aborted, requeued = assert_aborted_and_requeued(tmp_path / "c.sqlite")

        with Campaign.open(tmp_path / "c.sqlite", writer=True) as c:
            # No --port: the link the campaign last ran against, at its time scale, never sim://mbe.
            assert c.live_link(None, None) == (server.path, SCALE)
            assert c.resume().kind is HaltKind.BUDGET
        assert_resumed_to_the_end(tmp_path / "c.sqlite", aborted, requeued, trials=2)


# -- the clock and the command line, without an instrument ----------------------------------------------


def test_a_scaled_wall_clock_keeps_pace_with_an_emulator_and_an_abort_ends_its_waits() -> None:
    clock = WallClock(3600, origin=time.time() - 2.0)
    assert clock.now() - clock.origin == pytest.approx(2.0 * 3600, abs=0.5 * 3600)
    started = time.monotonic()
    clock.sleep(360.0)  # six emulated minutes: a tenth of a second
    assert 0.09 <= time.monotonic() - started < 2.0

    caught: list[BaseException] = []

    def wait_an_emulated_year() -> None:
        try:
            clock.sleep(365 * 86400.0)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            caught.append(e)

    sleeper = threading.Thread(target=wait_an_emulated_year)
    sleeper.start()
    time.sleep(0.1)
    clock.abort()
    sleeper.join(timeout=2)
    assert not sleeper.is_alive() and isinstance(caught[0], OperatorAbort) and isinstance(caught[0], InstrumentFault)
    with pytest.raises(OperatorAbort):
        clock.sleep(0)  # every later wait too: the trial stops at its next one
    with pytest.raises(ValueError, match="positive"):
        WallClock(0)


@pytest.mark.parametrize(("args", "message"), [
    (["--time-scale", "3600"], "give that emulator's port with --port"),
    (["--sim", "--port", "/dev/pts/5"], "--port and --sim exclude each other"),
    (["--port", "sim://mbe", "--time-scale", "3600"], "simulated in this process, in virtual time"),
    (["--port", " "], "--port) is empty"),
    (["--port", "/dev/pts/no-such-pty", "--time-scale", "3600"], "no such device"),
])
def test_run_refuses_a_time_scale_without_an_emulator_port(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "x.sqlite"
    result = CliRunner().invoke(main, ["run", str(mbe_protocol(tmp_path)), "--db", str(db), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not db.exists()  # refused before a campaign file was made


def test_a_protocol_asking_for_approval_needs_an_operator_before_anything_is_created(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite"
    result = CliRunner().invoke(main, ["run", str(EXAMPLE), "--sim", "--db", str(db)])
    assert result.exit_code == 2 and "add --approve" in result.output and "approval: outside_region" in result.output
    assert not db.exists()


def test_time_scale_is_refused_for_an_in_process_simulator(tmp_path: Path) -> None:
    with Campaign.create(mbe_protocol(tmp_path), tmp_path / "c.sqlite") as c:
        with pytest.raises(BadInput, match="virtual time"):
            c.engine(time_scale=3600)
        assert c.store.trials() == []


@pytest.mark.slow
def test_the_safe_state_at_the_end_of_a_campaign_is_journaled_for_the_campaign(tmp_path: Path) -> None:
    with Campaign.create(mbe_protocol(tmp_path), tmp_path / "c.sqlite") as c:  # sim://mbe, virtual time
        assert c.run().kind is HaltKind.BUDGET
        (safe,) = c.store.events(kinds=["safe_state"])
        assert safe["trial_id"] is None and safe["detail"].startswith("mbe: budget")
        campaign_level = [x["text"] for x in c.store.commands() if x["trial_id"] is None and x["direction"] == "tx"]
        assert campaign_level[:5] == ["SHUT:SR CLOS", "SHUT:RU CLOS", "SHUT:MAIN CLOS", "OZONE:FLOW 0", "BFM OUT"]
        last = c.store.trials()[-1]
        assert [x["text"] for x in c.store.commands(last.id) if x["direction"] == "tx"][-1] == "GROW:MEAS?"


def test_emulate_records_only_what_an_emulator_can_record(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["emulate", "furnace", "--pty", "--record", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "only mbe does" in result.output


# -- the user's commands, each in its own process -----------------------------------------------------


def emulator(record: Path, seed: int = 3) -> AbstractContextManager[str]:
    """`closedloop emulate mbe --pty --time-scale SCALE --record FILE`; yields the pty path it prints."""
    return emulator_process("mbe", "--time-scale", str(SCALE), "--seed", str(seed), "--record", str(record))


def closedloop(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "closedloop", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def finished(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def signal_when_growing(process: subprocess.Popen[str], record: Path, signum: int) -> int:
    """Send `signum` to `process` a moment into the first growth; returns how many records came before."""
    deadline = time.monotonic() + 120
    while not growing(read_record(record)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the growth never started"
        time.sleep(0.01)
    time.sleep(0.2)
    before = len(read_record(record))
    process.send_signal(signum)
    return before


@pytest.mark.slow
def test_walk_through_validate_run_ctrl_c_mid_growth_status_and_resume(tmp_path: Path) -> None:
    protocol, db, record = mbe_protocol(tmp_path), tmp_path / "srruo3.sqlite", tmp_path / "chamber.jsonl"
    code, out, _ = finished(closedloop("validate", str(protocol), cwd=tmp_path))
    assert code == 0 and "valid: srruo3-mbe" in out
    with emulator(record) as port:
        run = closedloop("run", str(protocol), "--port", port, "--time-scale", str(SCALE), "--db", str(db), cwd=tmp_path)
        before = signal_when_growing(run, record, signal.SIGINT)
        code, _, err = finished(run)
        assert code == 130, err
        assert f"instrument: mbe at {port} (--port); clock x{SCALE} (emulator time scale)" in err
        assert "paused: operator interrupt (Ctrl-C)" in err and f"closedloop resume {db}" in err
        taken = read_record(record)
        assert_chamber_made_safe(taken[before:], heater_targets(taken[:before]))
        aborted, requeued = assert_aborted_and_requeued(db)

        code, out, _ = finished(closedloop("status", str(db), cwd=tmp_path))
        assert code == 0 and "status: paused" in out and "abandoned 1, proposed 1" in out
        assert f"operator_abort trial {aborted}" in out

        code, out, err = finished(closedloop("resume", str(db), "--port", port, "--time-scale", str(SCALE), cwd=tmp_path))
        assert code == 0, err
        assert "stopped: budget: 3 of 3 trials done" in out and f"trial {requeued} running on mbe" in err
    assert_resumed_to_the_end(db, aborted, requeued, trials=3)
    with CampaignStore.open(db) as store:
        links = [e["data"] for e in store.events(kinds=["connection"])]
        assert links == [{"connection": port, "time_scale": SCALE}] * 2
        assert all(e["virtual_t"] is None for e in store.events())  # the wall clock, not a simulation
        # The retried growth reached the chamber with the aborted trial's setpoints.
        sent = [c["text"] for c in store.commands(requeued) if c["direction"] == "tx"]
        aborted_conditions = store.trial(aborted).conditions
        assert f"RU_CELL:SP {aborted_conditions['ru_cell_temp']!r}" in sent


@pytest.mark.slow
def test_sigterm_mid_growth_pauses_the_same_way_and_resume_finds_the_port_on_its_own(tmp_path: Path) -> None:
    protocol, db, record = mbe_protocol(tmp_path), tmp_path / "srruo3.sqlite", tmp_path / "chamber.jsonl"
    with emulator(record, seed=8) as port:
        run = closedloop("run", str(protocol), "--port", port, "--time-scale", str(SCALE), "--db", str(db),
                         "--quiet", cwd=tmp_path)
        before = signal_when_growing(run, record, signal.SIGTERM)
        code, _, err = finished(run)
        assert code == 130, err
        taken = read_record(record)
        assert_chamber_made_safe(taken[before:], heater_targets(taken[:before]))
        aborted, requeued = assert_aborted_and_requeued(db)

        code, out, err = finished(closedloop("resume", str(db), "--quiet", cwd=tmp_path))
        assert code == 0, err
        assert f"instrument: mbe at {port} (from the campaign's last run); clock x{SCALE}" in err
    assert_resumed_to_the_end(db, aborted, requeued, trials=3)
