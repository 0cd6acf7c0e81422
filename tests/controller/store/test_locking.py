"""One writer per campaign, enforced by flock on `<campaign>.lock`, tested against real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.controller.store.campaign_store import CampaignLocked, CampaignStore
from closedloop.controller.store.locking import WriterLock
from tests import paths
from tests.controller.store.test_store import new_store

REPO = paths.ROOT

# Opens the campaign as the writer, says so, then keeps writing until it is killed.
HOLDER = """
import sys, time
from closedloop.controller.store.campaign_store import CampaignStore
from tests import paths
store = CampaignStore.open(sys.argv[1], writer=True)
print("READY", flush=True)
tick = 0
while True:
    store.record_event("note", detail=f"tick {tick}")
    tick += 1
    time.sleep(0.01)
"""


def start_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"the writer process did not start: {line!r} {proc.communicate()[1]}")
    return proc


def notes(path: Path) -> int:
    with CampaignStore.open(path) as reader:
        return len(reader.events(kinds=["note"]))


def test_a_second_writer_is_refused_while_readers_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    new_store(path).close()
    proc = start_holder(path)
    try:
        with pytest.raises(CampaignLocked) as refused:
            CampaignStore.open(path, writer=True)
        assert f"campaign is locked by pid {proc.pid} on {socket.gethostname()}" in str(refused.value)
        assert (refused.value.pid, refused.value.host) == (proc.pid, socket.gethostname())

        # Readers need no lock, and neither blocks the other: the writer keeps committing meanwhile.
        with CampaignStore.open(path) as reader:
            first = len(reader.events(kinds=["note"]))
            deadline = time.monotonic() + 10
            while len(reader.events(kinds=["note"])) <= first + 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(reader.events(kinds=["note"])) > first + 3
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    written = notes(path)
    assert written > 3  # every acknowledged commit of the killed writer is still there
    with CampaignStore.open(path, writer=True) as store:
        store.record_event("note", detail="after the kill")
        pid, host, since = WriterLock(path).path.read_text().split()
        assert [pid, host] == [str(os.getpid()), socket.gethostname()] and abs(float(since) - time.time()) < 60
    assert notes(path) == written + 1


def test_one_process_cannot_open_two_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    first = new_store(path)
    with pytest.raises(CampaignLocked, match=f"pid {os.getpid()} on"):
        CampaignStore.open(path, writer=True)
    with pytest.raises(FileExistsError):
        new_store(path)
    first.close()
    with CampaignStore.open(path, writer=True) as second:
        second.record_event("note", detail="second writer")
        assert second.writable
    assert not second.writable


def test_the_lock_is_released_when_the_writer_leaves_by_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    new_store(path).close()
    with pytest.raises(RuntimeError), CampaignStore.open(path, writer=True):
        raise RuntimeError("engine crashed")
    with CampaignStore.open(path, writer=True) as store:
        assert store.writable


def test_a_refused_open_does_not_disturb_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    holder = new_store(path)
    lock_text = WriterLock(path).path.read_text()
    for _ in range(3):
        with pytest.raises(CampaignLocked):
            CampaignStore.open(path, writer=True)
    assert WriterLock(path).path.read_text() == lock_text
    holder.record_event("note", detail="still the writer")
    holder.close()
