"""A full disk under a running campaign is a campaign failure: exit 1 (not 2, it is no bad input), one
clear line, and a file that opens, reports and resumes with every result measured before it.

The disk fills through SQLite's own limit (`PRAGMA max_page_count` on the writer's connection, set where
the store opens it): the database then fails exactly as on a full disk, with SQLITE_FULL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.store import campaign_store
from closedloop.controller.store.campaign_store import CampaignStore, StorageFailed
from closedloop.controller.store.sqlite import Database
from closedloop.drivers.base import Measurement
from tests.controller.store.test_store import dispatched_trial, new_store

ROOM_PAGES = 4  # room for about eight Branin trials (each table grows page by page)


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """Every writer connection opened from now on may grow the file by `pages` pages only."""
    real = campaign_store.connect

    def limited(path: Path, *, writer: bool, durable: bool = True) -> Database:
        db = real(path, writer=writer, durable=durable)
        if writer:
            used = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {used + pages}")
        return db

    monkeypatch.setattr(campaign_store, "connect", limited)


def trial_rows(db: Path) -> list[tuple]:
    with CampaignStore.open(db) as store:
        return [(t.conditions, t.values) for t in store.trials() if t.state == "measured"]


def test_a_full_disk_fails_the_campaign_with_exit_1_and_keeps_every_result(
    branin_protocol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    protocol = branin_protocol(trials=24, n_init=4, random=True)
    runner = CliRunner()
    clean = tmp_path / "clean.sqlite"
    assert runner.invoke(main, ["run", str(protocol), "--db", str(clean), "--quiet", "--no-report"]).exit_code == 0

    db = tmp_path / "full.sqlite"
    with monkeypatch.context() as patch:
        fill_disk_after(patch, ROOM_PAGES)
        full = runner.invoke(main, ["run", str(protocol), "--db", str(db), "--quiet", "--no-report"])
    assert full.exit_code == 1, full.output
    assert full.exception is None or isinstance(full.exception, SystemExit)  # no traceback
    assert (f"error: {db}: could not write the campaign file (database or disk is full). That write was not kept; "
            f"every result recorded before it is in the file. Free disk space (or fix the disk), then continue "
            f"with: closedloop resume {db}") in full.output

    # The file is whole, status works and does not claim a run is going on.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    status = runner.invoke(main, ["status", str(db)])
    assert status.exit_code == 0 and "status: running" not in status.output
    # Paused with the reason when that small write still fitted, else found with its writer gone.
    assert ("status: paused" in status.output and "the campaign file could not be written (database or disk is "
            "full)" in status.output) or "status: interrupted (writer gone" in status.output, status.output
    # Every result measured before the disk filled is there, exactly as an unhindered run measured it.
    kept = trial_rows(db)
    assert 1 <= len(kept) < 24 and kept == trial_rows(clean)[: len(kept)]

    # Room again: resume reconciles the interrupted trial and finishes the budget.
    done = runner.invoke(main, ["resume", str(db), "--quiet", "--no-report"])
    assert done.exit_code == 0, done.output
    assert trial_rows(db)[: len(kept)] == kept and len(trial_rows(db)) == 24


def test_an_artifact_that_cannot_be_written_is_a_storage_failure_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with new_store(path) as store:
        store.inline_limit = 16  # this trace goes to <campaign>.artifacts/
        (tmp_path / "c.sqlite.artifacts").write_text("not a folder")  # the folder cannot be made: an I/O error
        trial = dispatched_trial(store)
        with pytest.raises(StorageFailed, match="could not write the campaign file"):
            store.record_measurement(trial, Measurement(values={"y": 1.0}, artifacts={"trace": np.arange(64.0)}))
        assert store.trial(trial).state == "dispatched" and store.trial(trial).values == {}
        assert store.events(trial_id=trial)[-1]["to_state"] == "dispatched"  # nothing of the failed write
