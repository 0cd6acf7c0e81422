"""Under `--time-scale` the wall-time budget is charged with the instrument's time at the emulator's pace
and with every real wait (a serial timeout, planning, start-up) as the real second it was.

It used to multiply everything since the campaign's creation by the scale: at x36000 a furnace that never
answered "used 77.95 h of 72 h" after six 0.2 s timeouts, and the campaign stopped as if it had run out
of time (exit 0) instead of pausing on the dead instrument (exit 1)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from closedloop.controller.engine.clock import WallClock
from closedloop.controller.store.campaign_store import CampaignStore
from tests.controller.engine.test_serial_campaign import emulator, furnace_protocol

SCALE = 36000.0


def test_a_scaled_clock_charges_instrument_waits_at_its_scale_and_real_waits_as_they_are() -> None:
    clock = WallClock(SCALE)
    start = time.time()
    clock.sleep(0.25 * SCALE)  # an anneal of 2.5 emulated hours: 0.25 s of wall time
    time.sleep(0.25)  # a serial timeout or a GP fit: real time, at any scale
    real = time.time() - start
    charged = clock.elapsed_since(start)
    assert 0.25 * SCALE + 0.25 <= charged <= 0.25 * SCALE + real + 0.05 * SCALE
    # The old charge, (real time) x scale, would have been ~2x this.
    assert charged < 0.75 * real * SCALE


def test_waits_of_stations_side_by_side_pass_once() -> None:
    clock = WallClock(SCALE)
    start = time.time()
    threads = [threading.Thread(target=clock.sleep, args=(0.3 * SCALE,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = time.time() - start
    # Three stations waited the same 3 emulated hours at once: 3 h, not 9 h.
    assert 0.3 * SCALE <= clock.elapsed_since(start) <= real * SCALE + 1.0


def test_at_scale_one_the_budget_is_plain_wall_time() -> None:
    clock = WallClock()
    start = time.time() - 100.0
    clock.sleep(0.05)
    assert 100.05 <= clock.elapsed_since(start) <= time.time() - start


@pytest.mark.slow
def test_a_serial_fault_storm_at_x36000_pauses_on_the_instrument_not_on_the_wall_time_budget(tmp_path: Path) -> None:
    # 10 h of emulated budget is 1 s of wall time at x36000: start-up alone used to spend it.
    with emulator("--time-scale", f"{SCALE:g}", "--faults", "no_reply:1.0", "--seed", "1") as port:
        protocol = furnace_protocol(tmp_path, trials=6, initial=3, connection=port,
                                    serial='{baudrate: 9600, terminator: "\\n", timeout: 0.2 s}',
                                    replace=(("budget: {trials: 6}", "budget: {trials: 6, wall_time: 10 h}"),),
                                    failures="{instrument_fault_retries: 0, on_fault: continue}")
        db = tmp_path / "storm.sqlite"
        done = subprocess.run([sys.executable, "-m", "closedloop", "run", str(protocol), "--db", str(db), "--port", port,
                               "--time-scale", f"{SCALE:g}", "--quiet", "--no-report"],
                              capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert "wall time" not in done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "paused: 3 trials in a row used up their fault retries" in done.stderr
    with CampaignStore.open(db) as store:
        assert store.campaign()["status"] == "paused"
        assert [t.state for t in store.trials()] == ["abandoned"] * 3
