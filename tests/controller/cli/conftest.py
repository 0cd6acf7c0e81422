"""Campaign files for the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from tests.controller.cli.campaigns import TRMC


@pytest.fixture
def handed_out(tmp_path: Path) -> Path:
    """A TRMC campaign measured by hand: trials 1-3 handed out with `ask`, no result told yet."""
    db = tmp_path / "opv.sqlite"
    with Campaign.create(TRMC, db) as c:
        c.ask(3)
    return db
