"""The single-writer lock of a campaign: `fcntl.flock` on a sidecar file `<campaign>.lock`.

flock is tied to the open file, so the kernel drops it the moment the holding process dies, SIGKILL and
power cuts included: a stale lock file never blocks a restart. The file's text ("pid host start-time")
exists only so a refusal or `status` can say who holds (or held) the lock. The lock file is never
deleted: unlinking it while another process has it open would let two writers lock two different inodes.

Whether a campaign's writer is alive is asked of the lock (`probe_writer`), never of the pid: a dead
writer's pid may belong to another process by now, but that process does not hold the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from closedloop.controller.store.errors import CampaignFileError, CampaignLocked

# A reader probing the lock (`probe_writer`) holds it, shared, for microseconds; a writer that meets such
# a probe tries again for this long before it reports the campaign locked.
PROBE_GRACE_S = 0.5


def lock_path_for(campaign_path: Path) -> Path:
    return campaign_path.with_name(campaign_path.name + ".lock")


@dataclass(frozen=True)
class WriterInfo:
    """Who writes a campaign. `alive`: a process holds the writer lock now (None: the lock file cannot be
    read, so nobody can tell). pid, host and since (epoch seconds the lock was taken) are what the last
    writer wrote into the lock file; unknown (None) after a clean exit, which empties it."""

    alive: bool | None
    pid: int | None = None
    host: str | None = None
    since: float | None = None


def _read_holder(fd: int) -> tuple[int | None, str | None, float | None]:
    try:
        parts = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        pid, host = int(parts[0]), parts[1]
    except (OSError, ValueError, IndexError):
        # Empty or half-written by a holder that is still writing it: the holder is simply unknown.
        return None, None, None
    try:
        since = float(parts[2]) if len(parts) > 2 else None  # older closedloop wrote "pid host" only
    except ValueError:
        since = None
    return pid, host, since


def probe_writer(campaign_path: Path) -> WriterInfo:
    """Whether a process holds the campaign's writer lock now, and who last took it. Never waits, never
    creates or changes the lock file (works on read-only media)."""
    try:
        fd = os.open(lock_path_for(Path(campaign_path)), os.O_RDONLY)
    except FileNotFoundError:
        return WriterInfo(alive=False)  # never opened for writing here (or copied without its lock file)
    except OSError:
        return WriterInfo(alive=None)
    try:
        pid, host, since = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return WriterInfo(True, pid, host, since)
        except OSError:
            return WriterInfo(None, pid, host, since)
        return WriterInfo(False, pid, host, since)
    finally:
        os.close(fd)  # also drops the shared lock, if we took it


class WriterLock:
    """Exclusive, non-blocking writer lock for one campaign file."""

    def __init__(self, campaign_path: Path) -> None:
        self.campaign_path = Path(campaign_path)
        self.path = lock_path_for(self.campaign_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise `CampaignLocked` naming the holder; never waits."""
        if self._fd is not None:
            return
        # os.open is close-on-exec by default, so instrument emulators we spawn do not inherit the lock.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CampaignFileError(
                self.campaign_path, f"cannot open the lock file {self.path.name} ({exc.strerror}); recording needs a "
                "writable campaign folder (reading does not)"
            ) from exc
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            pid, host, _ = _read_holder(fd)
            os.close(fd)
            raise CampaignLocked(self.campaign_path, pid, host) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_exclusive(fd: int) -> None:
    """flock(LOCK_EX) without waiting on a writer, but past a reader's momentary probe."""
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
