"""Errors of the campaign store. Each message names the file or trial and says what to do next."""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of every error the campaign store raises on purpose."""


class CampaignFileError(StoreError):
    """The campaign file is missing, not a campaign, damaged, or from a newer closedloop."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def damaged_file_error(path: Path | str, reason: str) -> CampaignFileError:
    """A CampaignFileError for a damaged file, with the sqlite3 command that salvages what is readable."""
    return CampaignFileError(
        path,
        f"the campaign file is damaged ({reason}). It was not changed. To salvage what is readable run: "
        f'sqlite3 "{path}" ".recover" | sqlite3 recovered.sqlite',
    )


class StorageFailed(StoreError):
    """Writing the campaign file failed (disk full, I/O error): a campaign failure, not bad input. The write
    that failed was rolled back whole; everything committed before it is in the file, which stays usable."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(
            f"{path}: could not write the campaign file ({reason}). That write was not kept; every result "
            f"recorded before it is in the file. Free disk space (or fix the disk), then continue with: "
            f"closedloop resume {path}"
        )
        self.path = Path(path)
        self.reason = reason


class CampaignExists(StoreError, FileExistsError):
    """A new campaign was asked for at a path that already holds a file: campaigns are never overwritten."""


class CampaignLocked(StoreError):
    """Another process (or another store object in this one) is recording into the campaign."""

    def __init__(self, path: Path | str, pid: int | None, host: str | None) -> None:
        holder = f"pid {pid} on {host}" if pid is not None else "another process (it has not said which)"
        super().__init__(
            f"{path}: campaign is locked by {holder}. Only one writer at a time: stop that run, or open "
            "the campaign read-only (status, report, export always work)."
        )
        self.path = Path(path)
        self.pid = pid
        self.host = host


class ReadOnlyCampaign(StoreError):
    """A write was attempted through a store opened for reading."""


class InvalidTransition(StoreError, ValueError):
    """A trial state change the lifecycle does not allow (e.g. anything out of a terminal state)."""


class AlreadyMeasured(InvalidTransition):
    """A measurement for a trial that already has one; use reanalysis to revise derived values."""


class UnknownTrial(StoreError, KeyError):
    """No trial with that id in this campaign."""

    def __str__(self) -> str:
        # KeyError would quote the message; this reads as a sentence.
        return str(self.args[0]) if self.args else "unknown trial"


class OutputPathError(StoreError):
    """An export or report cannot be written where asked (no such folder, not writable, the campaign itself)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
