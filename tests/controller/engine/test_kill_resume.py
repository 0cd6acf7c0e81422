"""Kill-and-resume: a real `closedloop` process is SIGKILLed at random moments, over and over, and each
time `closedloop resume` must pick the campaign up with nothing lost and nothing measured twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from closedloop.controller.store.campaign_store import CampaignStore

CLI = [sys.executable, "-m", "closedloop"]


def check_invariants(db: Path) -> dict[str, int]:
    store = CampaignStore.open(db)
    try:
        trials = {t.id: t for t in store.trials()}
        events = store.events()
    finally:
        store.close()
    dispatches = Counter(e["trial_id"] for e in events if e["kind"] == "state" and e["to_state"] == "dispatched")
    assert max(dispatches.values(), default=0) <= 1, "a trial was dispatched twice"
    chains: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        if e["kind"] == "state":
            chains[e["trial_id"]].append(e)
    for tid, t in trials.items():
        chain = chains[tid]
        assert chain and chain[0]["to_state"] == "proposed"
        for a, b in zip(chain, chain[1:], strict=False):
            assert b["from_state"] == a["to_state"], f"trial {tid}: broken event chain"
        assert chain[-1]["to_state"] == t.state, f"trial {tid}: state {t.state} but journal says {chain[-1]['to_state']}"
        if t.state == "measured":
            assert t.values, f"trial {tid} measured without values"
        else:
            assert not t.values, f"trial {tid} is {t.state} but has values"
        if t.retry_of is not None:
            assert trials[t.retry_of].state == "abandoned", f"trial {tid} retries a trial that was not abandoned"
    # A dispatched trial that was abandoned is re-queued exactly once (a journaled retry), unless the
    # instrument refused it; nothing that was measured is ever run again.
    retried = Counter(t.retry_of for t in trials.values() if t.retry_of is not None)
    assert max(retried.values(), default=0) <= 1
    for tid, t in trials.items():
        if t.state == "abandoned" and dispatches[tid]:
            assert retried[tid] == 1, f"trial {tid} was abandoned after dispatch but never re-queued"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return Counter(t.state for t in trials.values())


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(branin_protocol, tmp_path):
    # Long enough that a quiet machine still sees at least 10 kills before the campaign ends (with 40
    # trials a fast run once finished after 8).
    budget = 60
    protocol = branin_protocol(trials=budget, n_init=4, options="stations: 2, noise_sd: 0.01, fault_rate: 0.05", retries=3)
    db = tmp_path / "campaign.sqlite"
    rng = random.Random(20261122)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    finished = False
    while kills < 12 and not finished:  # 12 kills: enough to land in every phase; each costs ~4 s of suite
        args = ["resume", str(db)] if db.exists() else ["run", str(protocol), "--db", str(db)]
        cmd = [*CLI, *args, "--quiet", "--no-report"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(2.5, 5.0))
            out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            if db.exists():
                check_invariants(db)
    assert kills >= 12 or finished
    if not finished:
        done = subprocess.run([*CLI, "resume", str(db), "--quiet", "--no-report"], env=env, capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr.decode()
    states = check_invariants(db)
    assert states["measured"] + states["failed"] == budget
    store = CampaignStore.open(db)
    assert store.campaign()["status"] == "stopped"
    assert any(e["kind"] == "resume" for e in store.events())
    store.close()
    assert kills >= 10, f"only {kills} kills happened before the campaign finished; make it longer"


@pytest.mark.slow
def test_a_second_writer_is_refused_while_readers_work(branin_protocol, tmp_path):
    db = tmp_path / "c.sqlite"
    done = subprocess.run([*CLI, "run", str(branin_protocol(trials=3)), "--db", str(db), "--quiet"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from closedloop.controller.store.campaign_store import CampaignStore; "
         "s = CampaignStore.open(sys.argv[1], writer=True); print('locked', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        second = subprocess.run([*CLI, "resume", str(db)], capture_output=True, text=True)
        assert second.returncode == 2
        assert f"locked by pid {holder.pid} on" in second.stderr
        tell = subprocess.run([*CLI, "tell", str(db), "--trial", "1", "y=1"], capture_output=True, text=True)
        assert tell.returncode == 2 and "locked" in tell.stderr
        reader = subprocess.run([*CLI, "status", str(db), "--json"], capture_output=True, text=True)
        assert reader.returncode == 0 and '"results": 3' in reader.stdout
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    again = subprocess.run([*CLI, "status", str(db)], capture_output=True, text=True)
    assert again.returncode == 0 and time.monotonic() - t0 < 30
