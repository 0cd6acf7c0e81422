"""`closedloop list [FOLDER]`: every campaign file there, newest activity first, read-only (issue 20)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from tests import paths


def digest(folder: Path) -> dict[str, str]:
    # -shm is SQLite's shared-memory index of readers, rewritten by any reader; the data is in the rest
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith("-shm")}


def test_list_shows_each_campaign_and_names_files_it_cannot_read(tmp_path: Path) -> None:
    with Campaign.create(paths.PROTOCOLS / "trmc_opv_blend.yaml", tmp_path / "old.sqlite") as c:
        c.ask(2)
        c.tell(1, {"phi_sum_mu_max": "2.1e-3", "tau_half": "180 ns"})
    with Campaign.create(paths.PROTOCOLS / "trmc_opv_blend.yaml", tmp_path / "new.sqlite") as c:
        c.ask(1)
    (tmp_path / "notes.db").write_text("not a database")
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes((tmp_path / "old.sqlite").read_bytes())
    with sqlite3.connect(damaged) as db:
        db.execute("DROP TABLE events")
    (tmp_path / "readme.txt").write_text("not listed")
    before = digest(tmp_path)

    held = Campaign.open(tmp_path / "new.sqlite", writer=True)  # a live writer: listed as running
    try:
        result = CliRunner().invoke(main, ["list", str(tmp_path)])
    finally:
        held.close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["FILE", "CAMPAIGN", "STATUS", "RESULTS", "BEST", "LAST", "ACTIVITY"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"old.sqlite", "new.sqlite", "notes.db", "damaged.sqlite"}
    assert "running" in rows["new.sqlite"] and "0/40" in rows["new.sqlite"]
    assert "phi_sum_mu_max=0.0021" in rows["old.sqlite"] and "1/40" in rows["old.sqlite"]
    assert "damaged (see status)" in rows["damaged.sqlite"] and "not a campaign file" in rows["notes.db"]
    assert [line.split()[0] for line in lines[1:3]] == ["new.sqlite", "old.sqlite"]  # newest activity first
    assert digest(tmp_path) == before  # nothing was changed


def test_list_of_an_empty_or_missing_folder(tmp_path: Path) -> None:
    empty = CliRunner().invoke(main, ["list", str(tmp_path)])
    assert empty.exit_code == 0 and "no campaign files" in empty.stderr
    missing = CliRunner().invoke(main, ["list", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
