"""The campaign file and the files written from it: `run` never overwrites a file, `export`/`report` never
write over the campaign or into a folder that cannot take the file, and a damaged campaign is refused
by every command with its name and what is missing, byte for byte untouched."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from tests.controller.cli.campaigns import TRMC, digest, invoke, refused

# ---- run --db -------------------------------------------------------------------------------------------


def test_run_refuses_a_db_path_that_exists_and_leaves_it_untouched(
    handed_out: Path, branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    before = digest(handed_out)
    refused(invoke("run", TRMC, "--db", handed_out, "--sim", "--no-report"),
            f"--db {handed_out}", "never overwrites", f"closedloop resume {handed_out}", "another path")
    assert digest(handed_out) == before
    # Any file at all: the user may have mistyped the name of something that is not a campaign.
    notes = tmp_path / "notes.txt"
    notes.write_text("do not lose me")
    refused(invoke("run", branin_protocol(), "--db", notes, "--sim", "--no-report"), f"--db {notes}")
    assert notes.read_text() == "do not lose me"


# ---- export -o / report -o --------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "phrases"), [
    (lambda tmp: tmp / "no-such-folder" / "out.csv", ["no-such-folder/out.csv", "does not exist"]),
    (lambda tmp: tmp / "opv.sqlite.json" / "out.csv", ["opv.sqlite.json is not a folder"]),
    # A folder nobody may create files in, not even root (chmod would not stop root).
    (lambda tmp: Path("/sys/closedloop-export.csv"), ["/sys/closedloop-export.csv", "cannot write there"]),
    (lambda tmp: tmp / "opv.sqlite", ["opv.sqlite: that is the campaign file itself"]),
    (lambda tmp: tmp / "opv.sqlite-wal", ["opv.sqlite-wal: that is the campaign file itself"]),
])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_refuses_a_target_it_cannot_or_must_not_write(
    handed_out: Path, tmp_path: Path, target: Callable[[Path], Path], phrases: list[str], fmt: str
) -> None:
    (tmp_path / "opv.sqlite.json").write_text("{}")  # a file where a folder is expected
    before = digest(handed_out)
    refused(invoke("export", handed_out, "--format", fmt, "-o", target(tmp_path)), *phrases)
    assert digest(handed_out) == before
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "no-such-folder").exists()
    done = invoke("export", handed_out, "--format", fmt, "-o", tmp_path / f"out.{fmt}")  # a good path still works
    assert done.exit_code == 0 and (tmp_path / f"out.{fmt}").stat().st_size > 0


def test_report_refuses_to_write_over_the_campaign_or_where_it_cannot(handed_out: Path) -> None:
    before = digest(handed_out)
    refused(invoke("report", handed_out, "-o", handed_out), "that is the campaign file itself")
    refused(invoke("report", handed_out, "-o", "/sys/closedloop-report.html"), "/sys/closedloop-report.html")
    assert digest(handed_out) == before


# ---- damaged campaign files -------------------------------------------------------------------------------


def drop(table: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"DROP TABLE {table}")
        conn.commit()
        conn.close()
    return damage


def not_sqlite(path: Path) -> None:
    path.write_text("trial,phi_sum_mu_max\n1,2e-3\n")  # a results CSV given where the campaign belongs


def truncated(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


DAMAGES = {
    "events dropped": (drop("events"), "table events is missing"),
    "trials dropped": (drop("trials"), "table trials is missing"),
    "measurements dropped": (drop("measurements"), "table measurements is missing"),
    "not sqlite": (not_sqlite, "is not a SQLite database"),
    "truncated": (truncated, "truncated"),
}
COMMANDS = {
    "status": lambda db: ["status", db],
    "tell": lambda db: ["tell", db, "--trial", 2, "phi_sum_mu_max=1e-3"],
    "ask": lambda db: ["ask", db],
    "export": lambda db: ["export", db],
    "report": lambda db: ["report", db],
    "resume": lambda db: ["resume", db, "--sim", "--no-report"],
}


@pytest.fixture(scope="module")
def measured_by_hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trials 1-3 handed out, trial 1 told: every table has rows."""
    db = tmp_path_factory.mktemp("campaign") / "opv.sqlite"
    with Campaign.create(TRMC, db) as c:
        c.ask(3)
        c.tell(1, {"phi_sum_mu_max": "2.1e-3", "tau_half": "180 ns"})
    return db


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_every_command_refuses_a_damaged_campaign_and_leaves_it_as_it_was(
    measured_by_hand: Path, tmp_path: Path, damage: str, command: str
) -> None:
    db = tmp_path / "damaged.sqlite"
    shutil.copyfile(measured_by_hand, db)
    make_damage, says = DAMAGES[damage]
    make_damage(db)
    before = digest(db)
    refused(invoke(*COMMANDS[command](db)), str(db), says)
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) in (["damaged.sqlite"], ["damaged.sqlite", "damaged.sqlite.lock"])


def test_a_dropped_trigger_is_refused_to_writers_but_the_campaign_still_reads(
    measured_by_hand: Path, tmp_path: Path
) -> None:
    db = tmp_path / "no-trigger.sqlite"
    shutil.copyfile(measured_by_hand, db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_append_only_delete")  # the journal would no longer be append-only
    conn.close()
    before = digest(db)
    assert invoke("status", db).exit_code == 0
    refused(invoke("tell", db, "--trial", 2, "phi_sum_mu_max=1e-3"), "trigger events_append_only_delete is missing")
    assert digest(db) == before
