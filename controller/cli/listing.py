"""`closedloop list [FOLDER]`: every campaign file in a folder, one line each, newest activity first.

Each file is opened read-only, as `status` opens it: a file another process is writing is listed with
its live status, a file that is not a campaign (or is damaged) is listed as such, and nothing is changed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.errors import handle_errors
from closedloop.controller.protocol.model import ProtocolError
from closedloop.controller.store.errors import StoreError

SUFFIXES = (".sqlite", ".sqlite3", ".db")


@click.command(name="list")
@click.argument("folder", type=click.Path(file_okay=False, exists=True), default=".")
@click.option("--recursive", "-r", is_flag=True, help="Look in sub-folders too.")
@handle_errors
def list_campaigns(folder: str, recursive: bool) -> None:
    """Every campaign file in FOLDER (default: here) with its status, progress, best result and last activity."""
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in Path(folder).glob(pattern) if p.suffix in SUFFIXES and p.is_file())
    if not files:
        click.echo(f"no campaign files ({', '.join('*' + s for s in SUFFIXES)}) in {folder}", err=True)
        return
    rows = sorted((_row(path, Path(folder)) for path in files), key=lambda r: r["heard"], reverse=True)
    header = {"file": "FILE", "name": "CAMPAIGN", "status": "STATUS", "progress": "RESULTS", "best": "BEST",
              "last": "LAST ACTIVITY"}
    widths = {key: max(len(str(r[key])) for r in [header, *rows]) for key in header}
    for r in [header, *rows]:
        click.echo("  ".join(str(r[key]).ljust(widths[key]) for key in header).rstrip())


def _row(path: Path, folder: Path) -> dict[str, Any]:
    name = str(path.relative_to(folder))
    try:
        with Campaign.open(path) as c:
            s = c.status()
    except (StoreError, ProtocolError) as exc:  # `closedloop status FILE` says what is wrong with it
        status = "damaged (see status)" if "damaged" in str(exc) else "not a campaign file"
        return {"file": name, "name": "-", "status": status, "progress": "", "best": "", "last": "", "heard": 0.0}
    heard = s.get("last_heard") or 0.0
    best = ", ".join(f"{k}={v:.4g}" for k, v in s["best"]["values"].items()) if s["best"] else "-"
    return {
        "file": name, "name": s["name"], "status": s["status"], "progress": f"{s['results']}/{s['budget']}",
        "best": best, "last": _when(heard), "heard": heard,
    }


def _when(timestamp: float) -> str:
    if not timestamp:
        return "-"
    moment = dt.datetime.fromtimestamp(timestamp)
    today = dt.datetime.now().date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%Y-%m-%d %H:%M")
