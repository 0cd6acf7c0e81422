"""`--approve` puts the operator in front of every proposal, whatever the protocol's `approval:` says.

Issue 19: on an `approval: none` protocol the flag was silently ignored, so an operator who believed every
anneal was gated watched proposals go to the furnace unseen.
"""

from __future__ import annotations

import getpass
from pathlib import Path

from click.testing import CliRunner

from closedloop.controller.cli.exit_codes import EXIT_PAUSED_BY_OPERATOR
from closedloop.controller.cli.main import main
from closedloop.controller.store.campaign_store import CampaignStore
from tests import paths

FURNACE = str(paths.ROOT / "protocols" / "serial_furnace.yaml")  # approval: none


def test_approve_asks_about_every_proposal_of_an_approval_none_protocol(tmp_path: Path) -> None:
    db = tmp_path / "furnace.sqlite"
    # The operator skips the first proposal, accepts the second, then walks away (end of input).
    result = CliRunner().invoke(main, ["run", FURNACE, "--sim", "--approve", "--quiet", "--no-report", "--db", str(db)],
                                input="s\na\n")
    assert result.exit_code == EXIT_PAUSED_BY_OPERATOR, result.output
    assert "trial 1 proposed:" in result.output and "trial 2 proposed:" in result.output
    with CampaignStore.open(db) as store:
        approvals = [e["detail"] for e in store.events(kinds=["approval"])]
        states = {t.id: t.state for t in store.trials()}
        sent = [c["text"] for c in store.commands() if c["direction"] == "tx"]
    assert approvals[0].startswith("this run asks the operator about every proposal")
    who = f"({getpass.getuser()} at the terminal)"
    assert f"skipped by operator {who}" in approvals and f"accepted by operator {who}" in approvals
    # Only the accepted trial reached the furnace; the one nobody answered was never sent.
    assert states[1] == "rejected" and states[2] == "measured" and states[3] == "proposed"
    setpoints = [c for c in sent if c.startswith("SOUR:TEMP") and c != "SOUR:TEMP 25"]
    assert len(setpoints) == 1
