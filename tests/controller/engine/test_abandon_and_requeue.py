"""A trial given up (interrupted by a crash, a fault, an operator abort) and its re-run are recorded in one
transaction: a process killed between the two writes must not leave a trial abandoned with no retry, which
no later reconcile would revisit (seen once in the SIGKILL-at-random-moments test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.engine import CampaignEngine
from tests.controller.engine.test_driver_call_sites import ERRORS, FaultyInstrument


class KilledHere(BaseException):
    """Stands for SIGKILL between the two writes: nothing after it runs."""


def test_an_interrupted_trial_is_abandoned_only_together_with_its_retry(
    branin_protocol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.sqlite"
    with Campaign.create(branin_protocol(trials=3, n_init=3), db) as c:
        trial = c.store.add_trial({"x1": 1.0, "x2": 2.0}, proposer="sobol", origin="initial")
        c.store.transition(trial, "approved")
        c.store.transition(trial, "dispatched", instrument="faulty")  # then the process died

    def killed(self: CampaignEngine, trial_id: int, why: str, *, approve: bool = True) -> int:
        raise KilledHere

    monkeypatch.setattr(CampaignEngine, "_retry", killed)
    with Campaign.open(db, writer=True) as c, pytest.raises(KilledHere):
        c.run_with([Station("faulty", FaultyInstrument("nowhere", ERRORS["KeyError"]), virtual=True)],
                   gate=protocol_gate(c.protocol))
    with Campaign.open(db) as c:
        assert [(t.id, t.state) for t in c.store.trials()] == [(trial, "dispatched")]  # not abandoned alone

    monkeypatch.undo()
    with Campaign.open(db, writer=True) as c:
        c.run_with([Station("faulty", FaultyInstrument("nowhere", ERRORS["KeyError"]), virtual=True)],
                   gate=protocol_gate(c.protocol))
        trials = c.store.trials()
    assert trials[0].state == "abandoned" and trials[1].retry_of == trial and trials[1].state == "measured"
