"""Crash safety: a writer SIGKILLed at random moments loses nothing it acknowledged and leaves nothing half
written; damaged or too-new files are refused with a way forward, and never modified."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from closedloop.controller.store.campaign_store import CampaignFileError, CampaignStore
from closedloop.drivers.base import Measurement
from tests import paths
from tests.controller.store.test_store import dispatched_trial, new_store, ok, table_rows

REPO = paths.ROOT

# Records trials as fast as it can; prints "ACK ..." only after the store call returned.
WRITER = """
import sys
import numpy as np
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import Measurement
from tests import paths

store = CampaignStore.open(sys.argv[1], writer=True)
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    tid = store.add_trial({"x": float(rng.random())}, proposer="sobol", origin="initial")
    print(f"ACK added {tid}", flush=True)
    store.transition(tid, "approved")
    store.transition(tid, "dispatched", instrument="sim")
    print(f"ACK dispatched {tid}", flush=True)
    store.record_command(tid, "sim", "tx", f"RUN {tid}")
    print(f"ACK command {tid}", flush=True)
    trace = rng.normal(size=int(rng.integers(100, 5000)))
    y = float(trace.sum())
    store.record_measurement(tid, Measurement(values={"y": y}, units={"y": "V"}, artifacts={"trace": trace}))
    print(f"ACK measured {tid} {y!r}", flush=True)
"""


def run_and_kill(path: Path, seed: int, delay: float) -> list[list[str]]:
    """Start the writer, SIGKILL it `delay` seconds after its first acknowledgement; return its ACK lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seed)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("ACK"):
        proc.kill()
        raise AssertionError(f"writer did not start: {first!r} {proc.communicate()[1]}")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return [line.split() for line in [first, *rest.splitlines()] if line.startswith("ACK")]


def check_consistent(path: Path, acked: list[list[str]]) -> None:
    with CampaignStore.open(path) as store:
        assert store.check_integrity() == []
        trials = {t.id: t for t in store.trials()}
        commands = {c["trial_id"] for c in store.commands()}
        for _, what, tid_text, *rest in acked:
            trial = trials[int(tid_text)]  # every acknowledged trial exists
            if what == "dispatched":
                assert trial.state in ("dispatched", "measured"), trial
            elif what == "command":
                assert trial.id in commands
            elif what == "measured":
                assert trial.state == "measured"
                assert trial.values == {"y": float(rest[0])}
        for trial in trials.values():
            # Never half a measurement: state, status row, values and raw trace all or none.
            has_result = trial.state == "measured"
            assert (trial.measurement_status == "ok") == has_result, trial
            assert bool(trial.values) == has_result, trial
            artifacts = store.artifacts(trial.id)
            assert bool(artifacts) == has_result, trial
            if has_result:
                assert float(artifacts["trace"].sum()) == trial.values["y"]
            changes = [e for e in store.events(trial_id=trial.id) if e["kind"] == "state"]
            assert changes[-1]["to_state"] == trial.state
            assert len(changes) == {"proposed": 1, "approved": 2, "dispatched": 3, "measured": 4}[trial.state]
    assert table_rows(path, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    new_store(path).close()
    rng = random.Random(20240611)
    all_acked: list[list[str]] = []
    for round_number in range(10):
        acked = run_and_kill(path, seed=round_number, delay=rng.uniform(0.01, 0.25))
        assert acked, "the writer acknowledged nothing"
        all_acked.extend(acked)
        check_consistent(path, all_acked)  # also proves the killed writer's lock was released
    assert sum(a[1] == "measured" for a in all_acked) >= 10


@pytest.fixture
def finished_campaign(tmp_path: Path) -> Path:
    path = tmp_path / "done.sqlite"
    with new_store(path) as store:
        for i in range(20):
            tid = dispatched_trial(store, {"anneal_temp": 60.0 + i})
            store.record_measurement(tid, ok({"y": float(i)}, artifacts={"trace": np.arange(2000.0) * i}))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_truncated_file_is_refused_with_the_recover_hint_and_left_untouched(
    finished_campaign: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(finished_campaign, copy)
    with open(copy, "r+b") as handle:
        handle.truncate(copy.stat().st_size // 2)
    original, truncated = digest(finished_campaign), digest(copy)
    for writer in (False, True):
        with pytest.raises(CampaignFileError) as refused:
            CampaignStore.open(copy, writer=writer)
        message = str(refused.value)
        assert str(copy) in message and "truncated" in message
        assert f'sqlite3 "{copy}" ".recover" | sqlite3 recovered.sqlite' in message
    assert digest(copy) == truncated and digest(finished_campaign) == original
    assert not Path(f"{copy}-wal").exists() and not Path(f"{copy}-shm").exists()


def test_garbled_pages_are_reported_as_a_damaged_file(finished_campaign: Path, tmp_path: Path) -> None:
    copy = tmp_path / "garbled.sqlite"
    shutil.copyfile(finished_campaign, copy)
    page_size = table_rows(copy, "PRAGMA page_size")[0][0]
    with open(copy, "r+b") as handle:  # keep the header page, scramble every b-tree page after it
        handle.seek(page_size)
        handle.write(random.Random(3).randbytes(copy.stat().st_size - page_size))
    garbled = digest(copy)
    with pytest.raises(CampaignFileError, match=r"damaged .*\.recover"), CampaignStore.open(copy) as store:
        store.trials()
        store.events()
    assert digest(copy) == garbled


def test_a_file_from_a_newer_closedloop_is_refused(finished_campaign: Path, tmp_path: Path) -> None:
    copy = tmp_path / "newer.sqlite"
    shutil.copyfile(finished_campaign, copy)
    conn = sqlite3.connect(copy)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = digest(copy)
    for writer in (False, True):
        with pytest.raises(CampaignFileError, match=r"newer closedloop \(schema 2 > 1\); upgrade closedloop"):
            CampaignStore.open(copy, writer=writer)
    assert digest(copy) == before


def test_an_empty_file_is_not_a_campaign(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(CampaignFileError, match="empty"):
        CampaignStore.open(empty, writer=True)
    assert empty.stat().st_size == 0


def test_a_measurement_acknowledged_before_a_crash_survives_in_a_fresh_process(tmp_path: Path) -> None:
    # The in-process store is abandoned without close(): the WAL is left behind as after a crash.
    path = tmp_path / "abandoned.sqlite"
    store = new_store(path)
    tid = dispatched_trial(store)
    store.record_measurement(tid, Measurement(values={"y": 0.1 + 0.2}, artifacts={"t": np.arange(3)}))
    assert Path(f"{path}-wal").stat().st_size > 0
    shutil.copyfile(path, tmp_path / "copy.sqlite")
    shutil.copyfile(f"{path}-wal", tmp_path / "copy.sqlite-wal")
    store.close()
    with CampaignStore.open(tmp_path / "copy.sqlite") as reader:
        assert reader.trial(tid).values == {"y": 0.1 + 0.2}
        assert reader.trial(tid).state == "measured"
