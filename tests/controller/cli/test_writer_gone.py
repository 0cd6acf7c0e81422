"""`status` tells a live campaign from one whose writer is gone, and a second writer is refused.

A real `closedloop run` process is SIGKILLed mid-campaign. Its file still says `running` (nothing else
could be written), so `status` asks the writer lock, which the kernel dropped with the process: it must
say `interrupted`, who wrote it last and how to continue, never plainly `running`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from closedloop.controller.store.locking import lock_path_for
from tests import paths

CLI = [sys.executable, "-m", "closedloop"]


def status(db: Path) -> tuple[int, str, dict]:
    text = CliRunner().invoke(main, ["status", str(db)])
    as_json = CliRunner().invoke(main, ["status", str(db), "--json"])
    return text.exit_code, text.output, json.loads(as_json.output)


@pytest.fixture
def killed_run(branin_protocol, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A `closedloop run` of a 24-trial campaign, caught after its second result and checked while alive;
    then SIGKILLed."""
    db = tmp_path / "c.sqlite"
    run = subprocess.Popen([*CLI, "run", str(branin_protocol(trials=24)), "--db", str(db), "--quiet", "--no-report"],
                           cwd=paths.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (db.exists() and status(db)[2]["results"] >= 2):
            assert run.poll() is None, run.communicate()[1].decode()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.1)
        yield db, run
    finally:
        run.kill()
        run.wait(timeout=10)


@pytest.mark.slow
def test_status_says_interrupted_after_a_sigkill_and_resume_continues(killed_run) -> None:
    db, run = killed_run
    code, text, live = status(db)
    host = socket.gethostname()
    assert code == 0 and live["status"] == "running" and live["writer"]["alive"] is True
    assert f"status: running (pid {run.pid} on {host} since " in text

    # A second writer is refused while the first lives: resume and run on the same file, exit 2.
    again = subprocess.run([*CLI, "resume", str(db), "--no-report"], capture_output=True, text=True, cwd=paths.ROOT)
    assert again.returncode == 2 and f"campaign is locked by pid {run.pid} on {host}" in again.stderr
    protocol = Campaign.open(db).protocol.path
    twice = subprocess.run([*CLI, "run", str(protocol), "--db", str(db), "--no-report"], capture_output=True,
                           text=True, cwd=paths.ROOT)
    assert twice.returncode == 2 and "`run` never overwrites one" in twice.stderr
    assert "Traceback" not in again.stderr + twice.stderr

    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    code, text, gone = status(db)
    assert code == 0 and gone["status"] == "interrupted" and gone["stored_status"] == "running"
    assert gone["writer"] == {"alive": False, "pid": run.pid, "host": host, "since": live["writer"]["since"]}
    heard = time.strftime("%H:%M", time.localtime(gone["last_heard"]))
    assert (f"status: interrupted (writer gone; last heard {heard}, pid {run.pid} on {host}) - resume with "
            f"closedloop resume {db}") in text
    assert "status: running" not in text

    done = subprocess.run([*CLI, "resume", str(db), "--quiet", "--no-report"], capture_output=True, text=True,
                          cwd=paths.ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    code, text, end = status(db)
    assert end["status"] == "stopped" and end["results"] == 24 and "status: stopped - budget: 24 of 24" in text


@pytest.mark.slow
def test_a_recycled_pid_does_not_bring_a_dead_writer_back(killed_run) -> None:
    db, run = killed_run
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)
    # The dead writer's pid now belongs to a live process (this one): the lock, not the pid, decides.
    lock = lock_path_for(db)
    pid, host, since = lock.read_text().split()
    assert int(pid) == run.pid
    lock.write_text(f"{os.getpid()} {host} {since}\n")
    _, text, gone = status(db)
    assert gone["status"] == "interrupted" and gone["writer"]["pid"] == os.getpid()
    assert "interrupted (writer gone; last heard" in text and f"pid {os.getpid()} on {host}" in text
    # The HTML report says so too.
    html = db.with_suffix(".html")
    assert CliRunner().invoke(main, ["report", str(db), "-o", str(html)]).exit_code == 0
    assert "status</th><td>interrupted" in html.read_text()


def test_a_campaign_only_ever_driven_by_hand_is_idle_not_interrupted(branin_protocol, tmp_path: Path) -> None:
    db = tmp_path / "by-hand.sqlite"
    with Campaign.create(branin_protocol(), db) as c:
        assert c.status()["status"] == "running"  # this process is its writer
        c.ask(1)
    code, text, s = status(db)
    assert code == 0 and s["status"] == "idle" and s["writer"]["alive"] is False
    assert "status: idle (no process is running it; last heard" in text and "ask/tell" in text


def test_a_writer_in_this_process_is_alive_to_a_reader(branin_protocol, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    with Campaign.create(branin_protocol(), db):
        _, text, s = status(db)
        assert s["status"] == "running" and s["writer"]["alive"] is True and s["writer"]["pid"] == os.getpid()
        assert f"status: running (pid {os.getpid()} on " in text
    _, _, after = status(db)
    # A clean close empties the lock file: the writer is gone and no longer named.
    assert after["status"] == "idle" and after["writer"] == {"alive": False, "pid": None, "host": None, "since": None}
