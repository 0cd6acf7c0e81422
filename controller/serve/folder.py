"""Which campaign files a dashboard serves, and how a page names one.

`closedloop serve` is given folders and campaign files. A campaign is named in URLs by a key: its path
relative to the folder it was found in (or its file name, for a file given directly). A key that does
not name one of those files (`..`, an absolute path, a symlink leaving the folder, a file that is not a
campaign) is refused: the server only ever opens what it was started on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import Campaign
from closedloop.controller.protocol.model import ProtocolError
from closedloop.controller.serve.control import held_by, pending_approvals
from closedloop.controller.store.errors import StoreError

SUFFIXES = (".sqlite", ".sqlite3", ".db")
# A campaign in one of these states is waiting for a person (the badge on the list page).
NEEDS_ATTENTION = {"paused": "paused: resume or look at why", "interrupted": "the controller stopped: resume it"}


class UnknownCampaign(LookupError):
    """A key that names no campaign the server was started on."""


@dataclass(frozen=True)
class CampaignRow:
    """One line of the list page: what `closedloop list` prints, plus the key pages use."""

    key: str
    name: str
    status: str
    results: int
    budget: int
    best: str
    last_heard: float
    attention: str

    def as_json(self) -> dict[str, Any]:
        last = dt.datetime.fromtimestamp(self.last_heard).strftime("%Y-%m-%d %H:%M:%S") if self.last_heard else "-"
        return {"key": self.key, "name": self.name, "status": self.status, "progress": f"{self.results}/{self.budget}",
                "best": self.best, "last": last, "attention": self.attention}


class ServedCampaigns:
    """The campaign files under the folders and files the server was started on."""

    def __init__(self, paths: list[Path]) -> None:
        self.folders = [p.resolve() for p in paths if p.is_dir()]
        self.files = [p.resolve() for p in paths if p.is_file()]

    def keys(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.folders:
            for path in sorted(folder.rglob("*")):
                if path.suffix in SUFFIXES and path.is_file() and _inside(path, folder):
                    found[path.relative_to(folder).as_posix()] = path
        for path in self.files:
            found.setdefault(path.name, path)
        return found

    def path(self, key: str) -> Path:
        """The campaign file `key` names; `UnknownCampaign` for anything else."""
        path = self.keys().get(key)
        if path is None:
            raise UnknownCampaign(f"no campaign {key!r} is served here")
        return path

    def rows(self) -> list[CampaignRow]:
        """Every served campaign, the most recently active first; a file that is not a campaign is listed
        as such, never opened for writing."""
        rows = [_row(key, path) for key, path in self.keys().items()]
        return sorted(rows, key=lambda r: r.last_heard, reverse=True)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder)


def _row(key: str, path: Path) -> CampaignRow:
    try:
        with Campaign.open(path) as campaign:
            s = campaign.status()
            attention = NEEDS_ATTENTION.get(s["status"], "")
            if s["status"] == "running":
                attention = _running_attention(campaign)
    except (StoreError, ProtocolError, OSError) as exc:
        status = "damaged" if "damaged" in str(exc) else "not a campaign file"
        return CampaignRow(key, "-", status, 0, 0, "", 0.0, "")
    best = ", ".join(f"{k}={v:.4g}" for k, v in s["best"]["values"].items()) if s["best"] else "-"
    return CampaignRow(key, s["name"], s["status"], s["results"], s["budget"], best, s["last_heard"] or 0.0,
                       attention)


def _running_attention(campaign: Campaign) -> str:
    """Why a running campaign waits for a person: a proposal awaiting approval, or a pause from the page."""
    waiting = pending_approvals(campaign.store)
    if waiting:
        where = {p.where for p in waiting}
        count = "1 proposal waits" if len(waiting) == 1 else f"{len(waiting)} proposals wait"
        return f"{count} for approval at the {' and '.join(sorted(where))}"
    by = held_by(campaign.store)
    return f"paused by {by}: resume it from its page" if by else ""
