"""The OPV line (protocols/opv_line.yaml) against its emulators on real ptys, as a lab runs it: one
`closedloop emulate opv_robot hotplate hotplate trmc --pty` process (the films they make and measure
are shared inside it), `closedloop run` in another, SIGKILL in the middle, `closedloop resume`."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from closedloop.controller.campaign import Campaign
from tests import paths
from tests.emulated import ROOT

SCALE = 3600  # an emulated hour per wall second: a film's way through the line takes about a second
MODELS = ("opv_robot", "hotplate", "hotplate", "trmc")


def line_on(ptys: dict[str, list[str]], tmp_path: Path, trials: int) -> Path:
    """opv_line.yaml with each step on the pty its emulator listens on (the two hot plates: one each)."""
    text = (paths.PROTOCOLS / "opv_line.yaml").read_text()
    for old, new in [
        ("connection: sim://opv_robot", f"connection: {ptys['opv_robot'][0]}"),
        ("connection: sim://hotplate", f"connection: {ptys['hotplate'][0]}"),
        ("    stations: 2 ", f"    connections: [{', '.join(ptys['hotplate'])}]\n    stations: 2 "),
        ("connection: sim://trmc", f"connection: {ptys['trmc'][0]}"),
        ("budget: {trials: 40, wall_time: 12 h}", f"budget: {{trials: {trials}}}"),
        ("initial: {method: sobol, n: 8}", f"initial: {{method: sobol, n: {trials}}}"),  # no GP fit: fast
    ]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "opv_line.yaml"
    path.write_text(text)
    return path


def closedloop(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "closedloop", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def step_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM events WHERE kind = 'step'").fetchone()[0])
    except sqlite3.Error:
        return 0


def serve(models: tuple[str, ...], seed: int) -> tuple[subprocess.Popen[str], dict[str, list[str]]]:
    """`closedloop emulate MODELS --pty` in its own process, and the ptys each model listens on (in order)."""
    emulators = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", *models, "--pty", "--time-scale",
                                  str(SCALE), "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT)
    assert emulators.stdout is not None
    ptys: dict[str, list[str]] = {}
    for _ in models:
        model, _, where = emulators.stdout.readline().strip().partition(" listening on ")
        assert where.startswith("/dev/"), (model, where, emulators.stderr.read() if emulators.poll() else "")
        ptys.setdefault(model, []).append(where)
    return emulators, ptys


def test_the_line_runs_on_three_kinds_of_emulator_on_ptys_and_resumes_after_sigkill(tmp_path: Path) -> None:
    emulators, ptys = serve(MODELS, seed=4)
    try:
        protocol = line_on(ptys, tmp_path, trials=4)
        db = tmp_path / "line.sqlite"
        validated = subprocess.run([sys.executable, "-m", "closedloop", "validate", str(protocol)], cwd=tmp_path,
                                   capture_output=True, text=True, timeout=60)
        assert validated.returncode == 0, validated.stdout + validated.stderr
        assert f"anneal: serial at {ptys['hotplate'][0]} x2" in validated.stdout

        run = closedloop("run", str(protocol), "--db", str(db), "--time-scale", str(SCALE), "--no-report", cwd=tmp_path)
        deadline = time.monotonic() + 60
        while step_count(db) < 6 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()
        run.send_signal(signal.SIGKILL)  # mid-line: samples in several steps at once
        run.wait(timeout=10)
        with Campaign.open(db) as c:
            before = {t.id: (t.state, t.values) for t in c.store.trials()}
        assert any(state == "running" for state, _ in before.values())

        resumed = closedloop("resume", str(db), "--time-scale", str(SCALE), "--no-report", cwd=tmp_path)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out + err
        assert "stopped: budget: 4 of 4 trials done" in out
    finally:
        emulators.terminate()
        assert emulators.wait(timeout=10) == 0
    with Campaign.open(db) as c:
        trials = {t.id: t for t in c.store.trials()}
        steps = c.store.events(kinds=["step"])
    for trial_id, (state, values) in before.items():
        if state in ("measured", "failed"):  # nothing recorded before the kill changed, or was run again
            assert (trials[trial_id].state, trials[trial_id].values) == (state, values)
    measured = [t for t in trials.values() if t.state == "measured"]
    assert measured and all({"thickness", "plate_temp", "phi_sum_mu_max"} <= set(t.values) for t in measured)
    phases = {e["data"]["phase"] for e in steps}
    assert phases & {"repeat", "lost"} or all(state != "running" for state, _ in before.values())
    # Every sample caught in the line went on from its step: none is left running.
    assert all(t.state in ("measured", "failed", "abandoned") for t in trials.values())


def test_emulate_refuses_one_tcp_port_or_one_record_file_for_several_models(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from closedloop.controller.cli.main import main

    tcp = CliRunner().invoke(main, ["emulate", "hotplate", "trmc", "--tcp", "5025"])
    assert tcp.exit_code == 2 and "--tcp 5025 is one port for 2 models; use --tcp 0" in tcp.output
    record = CliRunner().invoke(main, ["emulate", "mbe", "mbe", "--record", str(tmp_path / "r.jsonl")])
    assert record.exit_code == 2 and "--record follows one emulator; give one MODEL" in record.output
