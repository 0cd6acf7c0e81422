"""The multi-fidelity planner on synthetic source pairs: a cheap proxy that tracks the target, or not."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from closedloop.planners.multifidelity import MultiFidelityPlanner
from closedloop.planners.provenance import Provenance, data_hash
from closedloop.planners.registry import make_planner
from closedloop.planners.sobol import SobolPlanner
from closedloop.planners.space import Fidelity, FloatParameter, Objective, Observation, Problem, SearchSpace

SPACE = SearchSpace((FloatParameter("x", 0.0, 1.0), FloatParameter("z", 0.0, 1.0)))
FILM = Fidelity("film", "signal", 1 / 3, log=True)
DEVICE = Fidelity("device", "pce", 24.0, target=True)
PROBLEM = Problem(SPACE, (Objective("pce"),), fidelities=(FILM, DEVICE))


def pce(c: dict) -> float:
    return 4.0 * math.exp(-((c["x"] - 0.7) ** 2) / 0.08) + 0.5 * c["z"]


def tracking_film(c: dict) -> float:
    """a * target + b in log units, plus a small independent term: rank correlation ~0.95."""
    return 1e-3 * 10 ** (0.3 * pce(c) + 0.05 * math.sin(17 * c["z"]))


def independent_film(c: dict) -> float:
    return 1e-3 * 10 ** math.cos(9 * c["z"] + 1.0)


def planner(**options: object) -> MultiFidelityPlanner:
    small = {"n_initial": 10, "num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "fit_maxiter": 60}
    return MultiFidelityPlanner(**(small | options))  # type: ignore[arg-type]


def campaign(film: object, n_films: int, devices: int) -> list[Observation]:
    """Sobol films, then devices at the first `devices` of them (as the initial design pairs them)."""
    points = [p.conditions for p in SobolPlanner().propose(Problem(SPACE, (Objective("pce"),)), [], [], n_films, 5)]
    films = [Observation(p, {"signal": film(p)}, fidelity="film") for p in points]  # type: ignore[operator]
    return films + [Observation(p, {"pce": pce(p)}, fidelity="device") for p in points[:devices]]


def test_records_round_trip_and_old_records_still_load() -> None:
    provenance = Provenance("multifidelity", "1", seed=3, fidelity="film", fidelity_reason="film: cheap")
    assert Provenance.from_dict(provenance.to_dict()) == provenance
    old = Provenance.from_dict({"planner": "botorch", "version": "2", "seed": 1})
    assert (old.fidelity, old.fidelity_reason, old.planner_version) == (None, None, "2")
    assert Observation({"x": 0.1}).fidelity is None
    plain = [Observation({"x": 0.1}, {"pce": 1.0})]
    # Hashes of campaigns without fidelities are what they were; a fidelity changes the hash.
    assert data_hash(plain, []) == data_hash([replace(plain[0], fidelity=None)], [])
    assert data_hash(plain, []) != data_hash([replace(plain[0], fidelity="device")], [])


@pytest.mark.parametrize(
    ("fidelities", "message"),
    [
        ((), "declares none: use the botorch planner"),
        ((FILM, replace(DEVICE, name="film")), "distinct"),
        ((FILM, replace(DEVICE, cost=0.0)), "cost must be a positive number"),
        ((replace(FILM, target=True), DEVICE), "exactly one fidelity must be the target"),
        ((FILM, replace(DEVICE, measures="jsc")), "measures 'jsc', but the objective is 'pce'"),
        ((FILM, replace(DEVICE, log=True)), "declare them alike"),
        ((DEVICE,), "add a cheaper source"),
    ],
)
def test_bad_fidelity_declarations_are_refused(fidelities: tuple[Fidelity, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        planner().propose(replace(PROBLEM, fidelities=fidelities), [], [], 1, 0)


def test_an_observation_of_an_undeclared_source_is_refused() -> None:
    with pytest.raises(ValueError, match="fidelity 'xrd', which the problem does not declare"):
        planner().propose(PROBLEM, [Observation({"x": 0.5, "z": 0.5}, {"q": 1.0}, fidelity="xrd")], [], 1, 0)


def test_the_initial_design_maps_the_space_with_films_then_pairs_devices_with_them() -> None:
    first = planner().propose(PROBLEM, [], [], 3, seed=1)
    assert {p.provenance.fidelity for p in first} == {"film"}
    assert all(p.provenance.design == "initial" and "initial design" in str(p.provenance.fidelity_reason) for p in first)
    films = campaign(tracking_film, 10, 0)
    paired = planner().propose(PROBLEM, films, [], 3, seed=1)
    assert [p.provenance.fidelity for p in paired] == ["device"] * 3
    film_points = [o.conditions for o in films]
    assert all(p.conditions in film_points for p in paired)  # measured where a film was, to learn the correlation
    assert len({tuple(p.conditions.values()) for p in paired}) == 3


def test_a_tracking_proxy_is_measured_early_and_its_correlation_learned_reproducibly() -> None:
    observations = campaign(tracking_film, 10, 3)
    first = planner().propose(PROBLEM, observations, [], 1, seed=4)[0]
    again = planner().propose(PROBLEM, observations, [], 1, seed=4)[0]
    assert first.conditions == again.conditions  # bit for bit, as the botorch planner
    timeless = {"fit_time_s", "optimize_time_s"}
    same = {k: v for k, v in first.provenance.to_dict().items() if k not in timeless}
    assert same == {k: v for k, v in again.provenance.to_dict().items() if k not in timeless}
    provenance = first.provenance
    assert provenance.design == "model" and provenance.fallback is None
    assert provenance.fidelity == "film", provenance.fidelity_reason
    numbers = provenance.acquisition_settings["fidelity"]
    assert numbers["task_correlation"]["film"] > 0.7, numbers
    assert numbers["variance_removed_per_hour"]["film"] > numbers["variance_removed_per_hour"]["device"]
    assert str(provenance.fidelity_reason).startswith("film: one measurement removes")
    assert "task correlation film 0." in str(provenance.fidelity_reason)
    assert Provenance.from_dict(provenance.to_dict()) == provenance


def test_an_independent_proxy_sends_the_next_measurement_to_the_target() -> None:
    [proposal] = planner().propose(PROBLEM, campaign(independent_film, 12, 6), [], 1, seed=2)
    numbers = proposal.provenance.acquisition_settings["fidelity"]
    assert proposal.provenance.fidelity == "device", proposal.provenance.fidelity_reason
    assert numbers["task_correlation"]["film"] < 0.5, numbers
    assert "no proxy is trusted" in str(proposal.provenance.fidelity_reason)


def test_after_proxy_share_hours_of_films_the_target_is_measured() -> None:
    observations = campaign(tracking_film, 10, 3)
    # 8 films (2.67 h) since the last device, repeating earlier ones: they leave the film as informative as it was.
    observations += [replace(o, values={"signal": 1.02 * tracking_film(o.conditions)}) for o in observations[:8]]
    [proposal] = planner(proxy_share=0.1).propose(PROBLEM, observations, [], 1, seed=4)
    assert proposal.provenance.fidelity == "device"
    assert proposal.provenance.acquisition_settings["fidelity"]["rule"] == "proxy share"
    assert "2.67 h already on proxies since the last device measurement (limit 2.4 h" in str(proposal.provenance.fidelity_reason)


def test_pending_points_are_not_proposed_again_and_failures_are_modelled() -> None:
    observations = campaign(tracking_film, 10, 3)
    observations[1] = replace(observations[1], values={}, failed=True)  # a film that did not form
    observations += [Observation({"x": 0.95, "z": 0.9}, {}, failed=True, fidelity="device")]  # a shorted device
    [first] = planner().propose(PROBLEM, observations, [], 1, seed=6)
    assert first.provenance.design == "model" and first.provenance.fallback is None
    assert first.provenance.acquisition_settings["constraints"] == ["__feasible__ >= 0 (model units)"]
    [second] = planner().propose(PROBLEM, observations, [first.conditions], 1, seed=6)
    assert second.conditions != first.conditions
    assert second.provenance.n_pending == 1


def test_the_registry_makes_it_with_botorch_options_and_checks_its_own() -> None:
    made = make_planner("multifidelity", n_initial=4, kernel="matern52", proxy_share=0.2)
    assert isinstance(made, MultiFidelityPlanner) and made.guards.proxy_share == 0.2
    with pytest.raises(ValueError, match="min_correlation"):
        make_planner("multifidelity", min_correlation=1.5)
