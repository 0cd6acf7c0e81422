"""The single-writer lock of a campaign: `fcntl.flock` on a sidecar file `<campaign>.lock`.

flock is tied to the open file, so the kernel drops it the moment the holding process dies, SIGKILL and
power cuts included: a stale lock file never blocks a restart. The file's text ("pid host") exists only
so the refusal can say who holds the lock. The lock file is never deleted: unlinking it while another
process has it open would let two writers lock two different inodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from closedloop.controller.store.errors import CampaignFileError, CampaignLocked


def lock_path_for(campaign_path: Path) -> Path:
    return campaign_path.with_name(campaign_path.name + ".lock")


def _read_holder(fd: int) -> tuple[int | None, str | None]:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        pid, host = text.split(maxsplit=1)
        return int(pid), host
    except (OSError, ValueError):
        # Empty or half-written by a holder that is still writing it: the holder is simply unknown.
        return None, None


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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _read_holder(fd)
            os.close(fd)
            raise CampaignLocked(self.campaign_path, pid, host) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
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
