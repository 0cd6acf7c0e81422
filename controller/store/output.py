"""Files written from a campaign (exports, reports): never over the campaign file itself, written
atomically, and a folder that cannot take them is an error naming the path, not a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

from closedloop.controller.store.errors import OutputPathError

# Errors that mean "not here" (the user's choice of path), as opposed to a failing disk.
_REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def campaign_files(campaign: Path) -> list[Path]:
    """The campaign file and the files SQLite and the writer lock keep beside it."""
    return [campaign, *(campaign.with_name(campaign.name + suffix) for suffix in ("-wal", "-shm", ".lock"))]


def check_output_path(target: Path, campaign: Path) -> None:
    """Refuse, before any work, a target whose folder is missing or that would replace the campaign."""
    folder = target.parent
    if not folder.exists():
        raise OutputPathError(target, f"the folder {folder} does not exist; create it, or write to another path")
    if not folder.is_dir():
        raise OutputPathError(target, f"{folder} is not a folder; write to a path inside a folder")
    if target.is_dir():
        raise OutputPathError(target, "is a folder; give a file name")
    if target.resolve() in {p.resolve() for p in campaign_files(campaign)}:
        raise OutputPathError(target, "that is the campaign file itself (or one beside it that SQLite keeps); "
                                      "write to another path")


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary sibling, then rename: a reader never sees half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, target)
    except OSError as exc:
        if exc.errno in _REFUSED:
            raise OutputPathError(target, f"cannot write there ({exc.strerror}); write to a folder you can "
                                          "write to") from None
        raise
    finally:
        with contextlib.suppress(OSError):  # nothing to remove where nothing could be written
            partial.unlink(missing_ok=True)
