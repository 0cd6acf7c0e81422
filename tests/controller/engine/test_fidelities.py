"""Fidelities (issue 22): sources of one objective, each a route through the workflow with a declared cost;
the budget in instrument time; the status and report's cost view.

The line is protocols/opv_line.yaml (coating robot, two hot plates, TRMC station on their emulators) with two
sources: `quick` stops after the anneal and reports the film's thickness (20 min), `full` goes on to the
TRMC station and measures the objective phi_sum_mu_max (1 h).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.engine import history
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.protocol.yaml_source import ProtocolError
from closedloop.controller.report.fidelity import FIDELITY_SETTINGS, TASK_CORRELATION
from closedloop.planners.registry import make_planner
from closedloop.planners.space import Fidelity
from tests.controller.cli.campaigns import invoke
from tests.controller.engine.test_line import line_file

ROOT = Path(__file__).resolve().parents[3]
FIDELITIES = """\
fidelities:
  quick: {steps: [coat, anneal], measures: thickness, cost: 20 min}
  full: {steps: [coat, anneal, measure], measures: phi_sum_mu_max, cost: 1 h, log: true, target: true}
"""


def mf_file(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = (ROOT / "protocols" / "opv_line.yaml").read_text() + FIDELITIES
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "mf_line.yaml"
    path.write_text(text)
    return path


def test_the_sources_reach_the_planner_with_their_costs_in_hours_and_routes(tmp_path: Path) -> None:
    protocol = load_protocol(mf_file(tmp_path))
    assert protocol.to_problem().fidelities == (
        Fidelity("quick", "thickness", 1 / 3, False, False), Fidelity("full", "phi_sum_mu_max", 1.0, True, True))
    assert protocol.routes() == {"quick": (0, 1), "full": (0, 1, 2)}
    result = invoke("validate", mf_file(tmp_path))
    assert result.exit_code == 0, result.output
    assert "    quick: measures thickness, 20 min each, steps coat -> anneal" in result.stdout
    assert "    full: measures phi_sum_mu_max, 1 h each, steps coat -> anneal -> measure; the target" in result.stdout


@pytest.mark.parametrize(("edit", "field", "message"), [
    (("target: true}", "target: false}"), "fidelities", "exactly one source is the target (target: true); 0 are"),
    (("[coat, anneal, measure]", "[coat, measure, anneal]"), "fidelities.full.steps",
     "list the steps once each, in the workflow's order: coat, anneal, measure"),
    (("[coat, anneal]", "[anneal]"), "fidelities.quick.steps", "every sample enters the line at its first step (coat)"),
    (("[coat, anneal]", "[coat, anneal, aneal]"), "fidelities.quick.steps[2]", "'aneal' is not a step of the workflow"),
    (("[coat, anneal]", "[coat]"), "fidelities.quick.steps", "anneal sets parameters of the space (anneal_temp, "
     "anneal_time): every source passes it"),
    (("measures: phi_sum_mu_max,", "measures: thickness,"), "fidelities.full.measures",
     "the target measures the objective 'phi_sum_mu_max', not 'thickness'"),
    (("measures: thickness,", "measures: tau_half,"), "fidelities.quick.measures",
     "none of its steps measures 'tau_half'; they measure plate_temp, thickness"),
    (("cost: 20 min", "cost: 0 min"), "fidelities.quick.cost", "a cost is a positive time"),
    (("  full: {steps: [coat, anneal, measure], measures: phi_sum_mu_max, cost: 1 h, log: true, target: true}\n", ""),
     "fidelities", "one source is no choice"),
])
def test_a_fidelity_mistake_is_refused_at_its_place(tmp_path: Path, edit: tuple[str, str], field: str, message: str) -> None:
    with pytest.raises(ProtocolError) as refusal:
        load_protocol(mf_file(tmp_path, edit))
    assert any(p.field == field and message in p.message and p.line > 0 for p in refusal.value.problems), \
        refusal.value.problems


def test_instrument_time_needs_fidelities_and_one_instrument_cannot_have_them(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError) as refusal:
        load_protocol(line_file(tmp_path, ("budget: {trials: 6}", "budget: {trials: 6, instrument_time: 10 h}")))
    assert [(p.field, p.message[:43]) for p in refusal.value.problems] == [
        ("budget.instrument_time", "instrument_time counts each trial at its so")]
    one = tmp_path / "one.yaml"
    one.write_text((ROOT / "protocols" / "trmc_opv_blend.yaml").read_text() + FIDELITIES)
    result = invoke("validate", one)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "fidelities: fidelities need a workflow: each source is a route through the workflow's steps" in result.output


def test_the_instrument_time_budget_stops_the_campaign_and_status_shows_the_spend(tmp_path: Path) -> None:
    # A planner that does not choose sources (random) runs every trial at the target, 1 h each: a 4 h budget
    # is four trials, whatever the trial budget says.
    path = mf_file(tmp_path, ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 20, instrument_time: 4 h}"),
                   ("  seed: 1\n", "  seed: 1\n  acquisition: random\n"))
    db = tmp_path / "mf.sqlite"
    with Campaign.create(path, db) as c:
        halt = c.run(sim=True)
        trials = c.store.trials()
        status = c.status()
    assert halt.kind is HaltKind.BUDGET and halt.text == "budget: 4.0 h of 4.0 h instrument time spent"
    assert len(trials) == 4 and all(t.fidelity is None and "phi_sum_mu_max" in t.values
                                    for t in trials if t.state == "measured")
    assert status["fidelities"]["spent_hours"] == pytest.approx(4.0)
    shown = invoke("status", db)
    assert "instrument time: 4 h of 4 h at the declared costs (quick 0 x 0.333 h, full 4 x 1 h)" in shown.stdout
    report = invoke("report", db, "-o", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "r.html").read_text()
    assert "Fidelities and cost" in page and "4 h of instrument time spent in all" in page


def device_line(tmp_path: Path, budget: str) -> Path:
    text = (ROOT / "protocols" / "opv_device_mf.yaml").read_text()
    old = "budget: {trials: 200, instrument_time: 200 h}"
    assert old in text
    path = tmp_path / "opv_device_mf.yaml"
    path.write_text(text.replace(old, budget))
    return path


def test_the_planner_chooses_each_source_and_each_sample_takes_its_route(tmp_path: Path) -> None:
    """protocols/opv_device_mf.yaml in --sim with the multi-fidelity planner: eight films map the space,
    three devices start (a day each), and while they are made films go on, no more than the planner's
    proxy share (half a device's cost); a film skips the device steps and a device the TRMC station."""
    db = tmp_path / "mf.sqlite"
    with Campaign.create(device_line(tmp_path, "budget: {trials: 100, instrument_time: 110 h}"), db) as c:
        halt = c.run(sim=True)
        trials = c.store.trials()
        steps = {t.id: [e["data"]["step"] for e in c.store.events(trial_id=t.id, kinds=["step"])
                        if e["data"]["phase"] == "started"] for t in trials}
        reasons = {t.id: c.store.proposal(t.id).provenance for t in trials}  # type: ignore[union-attr]
        spend = c.status()["fidelities"]
    assert halt.kind is HaltKind.BUDGET and "instrument time spent" in halt.text
    films = [t for t in trials if t.fidelity == "film"]
    devices = [t for t in trials if t.fidelity == "device"]
    assert [t.fidelity for t in trials[:8]] == ["film"] * 8 and len(devices) >= 3
    for t in films:
        assert steps[t.id] == ["coat", "anneal", "measure"][:len(steps[t.id])]
        assert t.state != "measured" or ("phi_sum_mu_max" in t.values and "pce" not in t.values)
    for t in devices:
        assert steps[t.id] == ["coat", "anneal", "fabricate", "jv"][:len(steps[t.id])]
        assert t.state != "measured" or ("pce" in t.values and "phi_sum_mu_max" not in t.values)
    waiting = [t for t in films if "waiting for the first device results" in (reasons[t.id].fidelity_reason or "")]
    assert waiting and len(waiting) * 20 / 60 <= 12.0  # films while devices are made: at most half a device's cost
    assert all(reasons[t.id].fidelity == t.fidelity for t in trials)
    assert spend["spent_hours"] == pytest.approx(sum(20 / 60 if t.fidelity == "film" else 24.0 for t in trials
                                                     if t.state in ("measured", "failed")))
    # With devices measured, the planner's next step is model-based: it records the film-device correlation
    # where the report's cost view reads it.
    with Campaign.open(db) as c:
        problem = c.protocol.to_problem()
        observations = history.observations(problem, c.store.trials())
    (proposal,) = make_planner("multifidelity", n_initial=24).propose(problem, observations, [], 1, seed=5)
    settings = proposal.provenance.acquisition_settings
    assert proposal.provenance.design == "model" and proposal.provenance.fidelity in ("film", "device")
    assert -1.0 <= settings[FIDELITY_SETTINGS][TASK_CORRELATION]["film"] <= 1.0
    assert proposal.provenance.fidelity_reason and "task correlation film" in proposal.provenance.fidelity_reason


def test_ask_names_each_trials_source_and_tell_wants_what_that_source_measures(tmp_path: Path) -> None:
    db = tmp_path / "ask.sqlite"
    with Campaign.create(ROOT / "protocols" / "opv_device_mf.yaml", db) as c:
        offers = c.ask(2)
        assert [o.fidelity for o in offers] == ["film", "film"]  # the initial design maps the space with films
        with pytest.raises(BadInput, match="missing a value for phi_sum_mu_max"):
            c.tell(offers[0].trial, {"pce": 3.1})
        c.tell(offers[0].trial, {"phi_sum_mu_max": "2.1e-3 cm^2/(V*s)"})
        assert c.store.trial(offers[0].trial).values == {"phi_sum_mu_max": pytest.approx(2.1e-3)}
        assert c.status()["fidelities"]["spent_hours"] == pytest.approx(1 / 3)
    shown = invoke("ask", db, "-n", "1")
    assert shown.exit_code == 0 and f"trial {offers[1].trial}: fidelity=film  acceptor_fraction=" in shown.stdout
