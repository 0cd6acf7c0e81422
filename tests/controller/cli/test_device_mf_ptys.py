"""protocols/opv_device_mf.yaml against its emulators on real ptys: the coating robot, two hot plates, the
TRMC station and the J-V source-measure unit served by one `closedloop emulate` process; the operator
confirms each device's fabrication at the terminal; SIGKILL in the middle, then `closedloop resume`.
Each sample goes on along its own source's route (a film to the TRMC station, a device to the SMU)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from closedloop.controller.campaign import Campaign
from tests import paths
from tests.controller.cli.test_line_ptys import SCALE, serve, step_count

MODELS = ("opv_robot", "hotplate", "hotplate", "trmc", "smu")
CONFIRMATIONS = "\n" * 50  # the operator's Enter for each device made by hand


def operated(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """A closedloop command with an operator at its standard input (who confirms each device made)."""
    return subprocess.Popen([sys.executable, "-m", "closedloop", *args], cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def device_line_on(ptys: dict[str, list[str]], tmp_path: Path) -> Path:
    text = (paths.PROTOCOLS / "opv_device_mf.yaml").read_text()
    for old, new in [
        ("connection: sim://opv_robot", f"connection: {ptys['opv_robot'][0]}"),
        ("connection: sim://hotplate", f"connection: {ptys['hotplate'][0]}"),
        ("    stations: 2 ", f"    connections: [{', '.join(ptys['hotplate'])}]\n    stations: 2 "),
        ("connection: sim://trmc", f"connection: {ptys['trmc'][0]}"),
        ("connection: sim://smu", f"connection: {ptys['smu'][0]}"),
        # Four films, then the first devices at the best of them: no model is fitted (fast).
        ("initial: {method: sobol, n: 24}", "initial: {method: sobol, n: 4}"),
        ("budget: {trials: 200, instrument_time: 200 h}", "budget: {trials: 200, instrument_time: 74 h}"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "opv_device_mf.yaml"
    path.write_text(text)
    return path


def test_the_device_line_runs_on_its_emulators_on_ptys_and_resumes_after_sigkill(tmp_path: Path) -> None:
    emulators, ptys = serve(MODELS, seed=2)
    try:
        protocol = device_line_on(ptys, tmp_path)
        db = tmp_path / "mf.sqlite"
        run = operated("run", str(protocol), "--db", str(db), "--time-scale", str(SCALE), "--no-report", cwd=tmp_path)
        assert run.stdin is not None
        run.stdin.write(CONFIRMATIONS)
        run.stdin.flush()
        deadline = time.monotonic() + 90
        while step_count(db) < 16 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()
        run.send_signal(signal.SIGKILL)  # films and devices in several steps at once
        run.wait(timeout=10)
        with Campaign.open(db) as c:
            before = {t.id: (t.state, t.values) for t in c.store.trials()}
        resumed = operated("resume", str(db), "--time-scale", str(SCALE), "--no-report", cwd=tmp_path)
        out, err = resumed.communicate(CONFIRMATIONS, timeout=180)
        assert resumed.returncode == 0, out + err
        assert "budget: " in out and "instrument time spent" in out
    finally:
        emulators.terminate()
        assert emulators.wait(timeout=10) == 0
    with Campaign.open(db) as c:
        trials = {t.id: t for t in c.store.trials()}
        routes = {t: [e["data"]["step"] for e in c.store.events(trial_id=t, kinds=["step"])
                      if e["data"]["phase"] == "done"] for t in trials}
        confirmed = {e["trial_id"] for e in c.store.events(kinds=["operator_step"])}
    for trial_id, (state, values) in before.items():
        if state in ("measured", "failed"):  # nothing recorded before the kill changed, or was run again
            assert (trials[trial_id].state, trials[trial_id].values) == (state, values)
    films = [t for t in trials.values() if t.fidelity == "film" and t.state == "measured"]
    devices = [t for t in trials.values() if t.fidelity == "device" and t.state == "measured"]
    assert films and all(routes[t.id] == ["coat", "anneal", "measure"] and "phi_sum_mu_max" in t.values for t in films)
    assert devices and all(routes[t.id] == ["coat", "anneal", "fabricate", "jv"] and "pce" in t.values for t in devices)
    assert {t.id for t in devices} <= confirmed  # each device's fabrication confirmed by the operator, journaled
    assert all(t.state in ("measured", "failed", "abandoned") for t in trials.values())
