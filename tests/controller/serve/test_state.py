"""A live page's state, read from a real campaign file: what runs where (at which step of a line), how
long its instrument usually takes, and what waits for the operator."""

from __future__ import annotations

from closedloop.controller.campaign import Campaign
from closedloop.controller.serve.state import campaign_figures, campaign_state


def test_a_running_trial_shows_its_instrument_step_and_usual_duration(branin_protocol, tmp_path):
    db = tmp_path / "c.sqlite"
    with Campaign.create(branin_protocol(trials=3, n_init=3), db) as c:
        c.run(sim=True)
        station = c.store.trials()[0].instrument
        trial_id = c.store.add_trial({"x1": 1.0, "x2": 2.0}, proposer="manual", origin="manual")
        for state in ("approved", "dispatched", "running"):
            c.store.transition(trial_id, state, instrument=station)
        c.store.record_event("step", trial_id=trial_id, detail="anneal started",
                             data={"step": "anneal", "index": 0, "station": station, "phase": "started"})
    state = campaign_state(db)
    (running,) = state["running"]
    assert (running["trial"], running["instrument"], running["step"]) == (trial_id, station, "anneal")
    assert running["expected_s"] is not None and running["expected_s"] >= 0.0  # from the three trials measured
    assert state["results"] == 3 and state["operator"]["pending"] == [] and state["operator"]["held_by"] is None
    figures = campaign_figures(db)
    assert figures["figures_version"] == 3 and figures["progress"]["data"]
    assert [f["id"] for f in figures["figures"]][0] == "objectives-vs-parameters"
