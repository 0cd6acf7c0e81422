"""The campaign file on disk: creating one safely, and the checks made before we trust one.

A damaged campaign is never opened for writing, so it cannot be made worse: `check_header` reads bytes
only, before SQLite touches the file, and nothing here ever deletes or rewrites a user's file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
from importlib import metadata as importlib_metadata
from pathlib import Path

from closedloop.controller.store.errors import CampaignExists, CampaignFileError, damaged_file_error
from closedloop.controller.store.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    create_schema,
    layout_problems,
    migrate,
)
from closedloop.controller.store.sqlite import Database

BUSY_TIMEOUT_MS = 10_000


def software_versions() -> dict[str, str]:
    """Versions worth recording with a campaign, read from package metadata (nothing heavy is imported),
    and the processor: a GP fit's last digits depend on it, so an audit says when it differs."""
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "cpu": processor_model()}
    for package in ("closedloop", "torch", "botorch", "gpytorch", "linear_operator", "numpy", "scipy"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def processor_model() -> str:
    """The CPU model as the OS names it ('AMD EPYC 7B13'), else the architecture ('x86_64')."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"{line.partition(':')[2].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def check_header(path: Path) -> None:
    """Refuse a missing, empty, non-SQLite or truncated file before SQLite touches it.

    Reads bytes only: a damaged campaign is never opened for writing, so it cannot be made worse.
    """
    if not path.exists():
        raise CampaignFileError(path, "no campaign file at this path; check the path (or start a campaign with `run`)")
    if not path.is_file():
        raise CampaignFileError(path, "is not a file; pass the campaign's .sqlite file")
    size = path.stat().st_size
    if size == 0:
        raise CampaignFileError(path, "the file is empty: it is not a closedloop campaign")
    with open(path, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(b"SQLite format 3\x00"):
        raise CampaignFileError(path, "is not a SQLite database, so not a closedloop campaign; check the path")
    if len(header) < 100:
        raise damaged_file_error(path, f"only {size} bytes, shorter than a SQLite header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is trustworthy only when written by the same change as the counter (offset 92).
    pages_valid = header[24:28] == header[92:96] and pages > 0
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        # Committed pages may still live in the WAL (a writer is active or crashed): the file alone is short.
        return
    if size % page_size:
        raise damaged_file_error(path, f"size {size} is not a whole number of {page_size}-byte pages; truncated?")
    if pages_valid and size < pages * page_size:
        raise damaged_file_error(path, f"truncated: {size} bytes on disk, the header promises {pages * page_size}")


def connect(path: Path, *, writer: bool, durable: bool = True) -> Database:
    """A connection with our pragmas. Readers cannot write (`query_only`, or `mode=ro` on read-only media).

    durable: fsync the WAL at every commit (`synchronous=FULL`), so an acknowledged write survives a power cut.
    Without it (`NORMAL`, ~30x faster commits, for simulated replays and benchmarks) a killed process still
    loses nothing, but a power cut may lose the last commits.
    """
    if writer or _writable(path):
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    db = Database(conn, execute_plugins=False)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    if writer:
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    else:
        db.execute("PRAGMA query_only = ON")
    return db


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def check_campaign(db: Database, path: Path, *, writer: bool) -> int:
    """Verify an opened file is a campaign this code can read; migrate an older one when writing.

    Returns the schema version now in the file.
    """
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise CampaignFileError(path, "is a SQLite database but not a closedloop campaign; check the path")
        if version > SCHEMA_VERSION:
            raise CampaignFileError(
                path,
                f"was written by a newer closedloop (schema {version} > {SCHEMA_VERSION}); upgrade closedloop",
            )
        if version < SCHEMA_VERSION:
            if not writer:
                raise CampaignFileError(
                    path, f"uses the older schema {version}; open it once as a writer (e.g. `resume`) to upgrade it"
                )
            version = migrate(db, path, version)
        if problems := layout_problems(db, writer=writer):
            raise damaged_file_error(path, "; ".join(problems))
        if db.execute("SELECT count(*) FROM campaign").fetchone()[0] != 1:
            raise damaged_file_error(path, "the campaign row is missing")
    except sqlite3.DatabaseError as exc:
        raise damaged_file_error(path, str(exc)) from exc
    return version


def build_new_file(path: Path, campaign_row: dict) -> None:
    """Lay out the campaign in a private temporary file, then link it into place.

    Nobody ever sees a half-created campaign, and os.link refuses to replace a file that appeared meanwhile.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.creating")
    for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
        leftover.unlink(missing_ok=True)
    db = Database(sqlite3.connect(str(temporary)), execute_plugins=False)
    try:
        db.execute("PRAGMA synchronous = FULL")
        db.enable_wal()  # persistent: recorded in the file header
        with db.atomic():
            create_schema(db)
            db.table("campaign").insert(campaign_row)
            db.table("events").insert(
                {"t": campaign_row["created_at"], "kind": "created", "detail": f"campaign {campaign_row['name']}",
                 "data": json.dumps({"protocol_sha256": campaign_row["protocol_sha256"]})}
            )
        db.close()  # the last connection checkpoints the WAL into the file
        os.link(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except FileExistsError:
        raise CampaignExists(f"{path}: a file appeared there while this campaign was being created; not replaced") from None
    finally:
        with contextlib.suppress(sqlite3.ProgrammingError):
            db.close()
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            leftover.unlink(missing_ok=True)
