"""Helpers for CLI tests on real campaign files: run a command in-process, check a refusal, read what is stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner, Result

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from tests import paths

TRMC = paths.PROTOCOLS / "trmc_opv_blend.yaml"  # phi_sum_mu_max is a log-scale objective; budget 40


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result: Result, *phrases: str) -> str:
    """The command ended with exit 2 and one `error:` line holding every phrase; returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    return result.stderr


def stored(db: Path) -> tuple[list[tuple[int, str, dict]], int]:
    """What the campaign file holds: each trial's id, state and values, and how many events."""
    with Campaign.open(db) as c:
        return [(t.id, t.state, t.values) for t in c.store.trials()], len(c.store.events())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
