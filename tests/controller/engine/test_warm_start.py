"""Warm-start trials in the engine: the planner learns from them, the budget and the stop rules do not
count them, and an audit re-derives every proposal made after an import."""

from __future__ import annotations

from pathlib import Path

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine import history
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.offline.audit import audit
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace
from closedloop.simulators.testfunctions import branin
from tests import paths

POINTS = [(-3.0, 12.0), (3.0, 3.0), (8.0, 8.0), (0.0, 5.0), (-4.0, 1.0)]


def earlier(tmp_path: Path, points: list[tuple[float, float]] = POINTS) -> Path:
    path = tmp_path / "earlier.csv"
    path.write_text("x1,x2,y\n" + "".join(f"{a},{b},{branin(a, b)}\n" for a, b in points))
    return path


def test_a_run_uses_the_warm_start_from_its_first_proposal_and_spends_its_whole_budget(
    branin_protocol, tmp_path: Path  # noqa: ANN001
) -> None:
    db = tmp_path / "b.sqlite"
    with Campaign.create(branin_protocol(trials=3, n_init=4), db, sim=True) as c:
        c.import_csv(earlier(tmp_path))
        halt = c.run(sim=True)
        trials = c.store.trials()
        first_own = c.store.proposal(6)
    assert halt.kind is HaltKind.BUDGET and halt.text == "budget: 3 of 3 trials done"
    assert [t.origin for t in trials] == ["warm_start"] * 5 + ["planner"] * 3
    assert first_own is not None
    assert first_own.provenance.design == "model" and first_own.provenance.n_observations == 5
    report = audit(db)  # the imported trials are inputs of the re-derived calls, not proposals
    assert report.all_match and report.matched == 3, report.lines()


SPACE = SearchSpace((FloatParameter("x", 0.0, 1.0),))
PROBLEM = Problem(SPACE, (Objective("y", maximize=True, target=10.0),))


def _rule(obs: list[Observation], imported: list[bool], *, no_improvement: int | None = None) -> str | None:
    halt = history.stop_rule(PROBLEM, obs, results=sum(not i for i in imported) or len(obs), max_trials=100,
                             elapsed_s=0.0, max_wall_time_s=None, no_improvement=no_improvement,
                             stop_on_target=True, imported=imported)
    return None if halt is None else halt.text


def test_an_imported_value_at_the_target_does_not_stop_the_campaign() -> None:
    literature = Observation({"x": 0.5}, {"y": 12.0})
    ours = Observation({"x": 0.2}, {"y": 3.0})
    assert _rule([literature, ours], [True, False]) is None
    assert _rule([literature, ours], [False, False]) == "target reached: y"  # had we measured it


def test_an_import_does_not_fill_the_no_improvement_window_but_sets_the_bar() -> None:
    ours = [Observation({"x": 0.1}, {"y": 1.0}), Observation({"x": 0.2}, {"y": 2.0})]
    imported = [Observation({"x": 0.3 + i / 10}, {"y": 0.5}) for i in range(4)]
    # Two own trials, then four earlier results that improve nothing: the window holds only own trials.
    assert _rule(ours + imported, [False, False] + [True] * 4, no_improvement=3) is None
    # An earlier result better than anything measured since: our trials that do not beat it do not improve.
    best_known = [Observation({"x": 0.9}, {"y": 9.0})]
    later = [Observation({"x": 0.1 * i}, {"y": 5.0 + i / 10}) for i in range(3)]
    assert _rule(best_known + later, [True, False, False, False], no_improvement=3) == (
        "no improvement in the last 3 trials")


def test_the_budget_counts_only_the_campaigns_own_results(branin_protocol, tmp_path: Path) -> None:  # noqa: ANN001
    with Campaign.create(branin_protocol(trials=2), tmp_path / "b.sqlite") as c:
        c.import_csv(earlier(tmp_path))
        assert history.n_results(c.store.trials()) == 0
        assert len(c.ask(2)) == 2  # the whole budget is still there


def test_the_planner_gets_earlier_results_near_the_space_and_not_those_far_outside(tmp_path: Path) -> None:
    """anneal_temp spans 60-200 degC: 230 degC is within a quarter of that range of the space (given to the
    model), 300 degC is not; a film across the thermal-budget constraint is data about the film like any
    other. All four are stored, and the three outside are flagged."""
    csv = tmp_path / "films.csv"
    csv.write_text("acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,phi_sum_mu_max\n"
                   "0.5,150,10,1500,chloroform,2e-3\n"        # inside
                   "0.5,230,5,1500,chloroform,1e-3\n"         # 30 degC above the range (and the constraint)
                   "0.5,300,5,1500,chloroform,5e-4\n"         # 100 degC above: too far to inform the model
                   "0.5,190,30,1500,chloroform,1.5e-3\n")     # inside the ranges, across the constraint
    with Campaign.create(paths.PROTOCOLS / "trmc_opv_blend.yaml", tmp_path / "opv.sqlite") as c:
        done = c.import_csv(csv)
        problem = c.protocol.to_problem()
        trials = c.store.trials()
        [(trial, _)] = c.ask(1)
        provenance = c.store.proposal(trial).provenance
    assert done.outside == 3 and len(trials) == 4
    assert [o.conditions["anneal_temp"] for o in history.observations(problem, trials)] == [150, 230, 190]
    assert history.imported_flags(problem, trials) == [True, True, True]
    assert provenance.n_observations == 3
