"""Campaign benchmarks (issues #6 and #7): the simulators' truth the trials are judged by, and the
per-seed bookkeeping of a small real run (a real campaign file, the real engine and emulated driver)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.campaign_benchmark import main as benchmark_main
from benchmarks.campaign_benchmark import table
from closedloop.controller.campaign import Campaign
from closedloop.controller.offline.campaign_bench import (
    CampaignBenchError,
    GroundTruth,
    benchmark_protocol_text,
    compare,
    ground_truth,
    run_campaign_benchmark,
    trials_to_reach,
)
from closedloop.controller.protocol.model import Protocol, load_protocol, parse_protocol_text
from closedloop.drivers.trmc_analysis import analyze_transient
from closedloop.simulators.mbe.chamber import growth_from, thickness_averaged
from closedloop.simulators.mbe.growth import MeasurementScatter, SrRuO3Window, measure
from closedloop.simulators.trmc.physics import Acquisition, Cavity, simulate_transient
from closedloop.simulators.trmc.process import SearchBox, TrmcProcessModel
from tests import paths

ROOT = paths.ROOT
TRMC = ROOT / "protocols" / "trmc_opv_blend.yaml"
MBE = ROOT / "protocols" / "mbe_srruo3.yaml"


@pytest.fixture(scope="module")
def trmc() -> tuple[Protocol, GroundTruth]:
    protocol = load_protocol(TRMC)
    return protocol, ground_truth(protocol)


@pytest.fixture(scope="module")
def mbe() -> tuple[Protocol, GroundTruth]:
    protocol = load_protocol(MBE)
    return protocol, ground_truth(protocol)


def legal_trmc_points(protocol: Protocol, n: int, seed: int) -> list[dict]:
    space = protocol.to_problem().space
    a, temp, time, spin, solvent = (space.parameter(n) for n in ("acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent"))
    box = SearchBox(
        (a.low, a.high), (temp.low, temp.high), (time.low, time.high), (spin.low, spin.high, spin.step), solvent.values  # type: ignore[union-attr]
    )
    rng = np.random.default_rng(seed)
    return [box.sample(rng, [c.evaluate for c in space.constraints]) for _ in range(n)]


def random_mbe_points(protocol: Protocol, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    fixed = {k: float(s.value) for k, s in protocol.space.items() if s.type == "fixed"}  # type: ignore[union-attr]
    ranges = {k: (s.low, s.high) for k, s in protocol.space.items() if s.type == "float"}  # type: ignore[union-attr]
    return [{**fixed, **{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ranges.items()}} for _ in range(n)]


# ---- the truth ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trmc_truth_is_the_noise_free_measurement_of_the_simulator(trmc: tuple[Protocol, GroundTruth]) -> None:
    protocol, truth = trmc
    model = TrmcProcessModel()
    quiet = Acquisition(averages=64, shot_noise=0.0, fluence_jitter=0.0)
    for conditions in legal_trmc_points(protocol, 4, seed=3) + [truth.optimum_conditions]:
        film = model.expected_film(conditions)  # every sample-scatter factor 1
        record = simulate_transient(film, model.excitation(conditions), Cavity(), quiet, np.random.default_rng(1))
        assert record.truth.phi_sum_mu_max == pytest.approx(truth.value(conditions), rel=1e-9)
        # ... and the driver's own analysis of that noise-free record agrees to within its smoothing
        analysed = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
        assert analysed.phi_sum_mu_max == pytest.approx(truth.value(conditions), rel=0.02)


def test_trmc_optimum_is_legal_and_beats_1000_random_legal_points(trmc: tuple[Protocol, GroundTruth]) -> None:
    protocol, truth = trmc
    space = protocol.to_problem().space
    assert space.contains(truth.optimum_conditions)
    assert truth.value(truth.optimum_conditions) == pytest.approx(truth.optimum_value, rel=1e-12)
    values = TrmcProcessModel().peak_values(legal_trmc_points(protocol, 1000, seed=11))
    assert truth.optimum_value >= values.max()
    assert 0.001 < np.mean(values >= 0.9 * truth.optimum_value) < 0.05  # a target neither trivial nor a needle


def test_mbe_truth_is_the_noise_free_film_of_the_growth_model(mbe: tuple[Protocol, GroundTruth]) -> None:
    protocol, truth = mbe
    window = SrRuO3Window()
    silent = MeasurementScatter(rrr=0.0, xrd_fwhm=0.0, thickness=0.0)
    judged = random_mbe_points(protocol, 40, seed=5) + [truth.optimum_conditions]
    wrong_phase = 0
    for c in judged:
        temps = {k: c[k] for k in ("sr_cell_temp", "ru_cell_temp", "substrate_temp")}
        film = thickness_averaged(growth_from(window, temps, c["ozone_flow"]), 60 * c["growth_time"])
        values = measure(film, np.random.default_rng(0), silent)
        assert truth.value(c) == pytest.approx(values.get("rrr", 0.0), rel=1e-12)
        wrong_phase += "rrr" not in values
    assert 0 < wrong_phase < len(judged)  # both kinds of film were judged: a wrong phase counts 0


def test_mbe_optimum_is_inside_the_space_and_beats_1000_random_points(mbe: tuple[Protocol, GroundTruth]) -> None:
    protocol, truth = mbe
    assert protocol.to_problem().space.contains(truth.optimum_conditions)
    values = [truth.value(c) for c in random_mbe_points(protocol, 1000, seed=2)]
    assert truth.optimum_value >= max(values)
    assert truth.optimum_value == pytest.approx(80.0, rel=0.01)  # the model's rrr_max, reached inside the box


# ---- the benchmark's settings and judging ------------------------------------------------------


def test_random_runs_switch_the_planner_and_every_run_gets_the_budget_without_early_stops() -> None:
    protocol = load_protocol(MBE)
    text, overrides = benchmark_protocol_text(protocol, "random", 150)
    changed = parse_protocol_text(text)
    assert changed.budget.trials == 150 and changed.budget.wall_time is None
    assert changed.stop.no_improvement is None and changed.stop.target_reached is False
    assert changed.approval.mode == "none"  # no operator at a benchmark
    assert changed.planner.acquisition == "random" and changed.planner.initial.method == "random"
    assert changed.space == protocol.space and changed.objectives == protocol.objectives
    assert set(overrides) == {"budget", "stop", "approval", "planner"}
    assert overrides["approval"]["from"]["mode"] == "outside_region"
    text, overrides = benchmark_protocol_text(protocol, "botorch", 60)
    assert parse_protocol_text(text).planner == protocol.planner and "planner" not in overrides
    with pytest.raises(CampaignBenchError, match="unknown planner 'sobolx'"):
        benchmark_protocol_text(protocol, "sobolx", 10)


def test_trials_to_reach_and_the_ratio_with_censored_runs() -> None:
    assert trials_to_reach([0.2, 0.89, 0.95, 1.0]) == 3
    assert trials_to_reach([0.2, 0.5]) is None
    runs = {"botorch": {"median_trials_to_target": 20.0, "budget": 60},
            "random": {"median_trials_to_target": None, "budget": 150}}
    censored = compare(runs, None)
    assert censored["ratio"] is None and censored["ratio_lower_bound"] == pytest.approx(7.5)
    runs["random"]["median_trials_to_target"] = 30.0
    assert compare(runs, None)["ratio"] == pytest.approx(1.5)


def test_a_space_in_other_units_than_the_instruments_is_refused(tmp_path: Path) -> None:
    text = TRMC.read_text().replace("{type: float, low: 60, high: 200, unit: degC}", "{type: float, low: 340, high: 470, unit: K}")
    text = text.replace("anneal_temp + 2 * anneal_time <= 220", "anneal_temp + 2 * anneal_time <= 500")
    with pytest.raises(CampaignBenchError, match=r"space.anneal_temp is in 'K'.*write the range in degC"):
        ground_truth(parse_protocol_text(text, tmp_path / "k.yaml"))


def test_bad_input_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert benchmark_main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert benchmark_main([str(TRMC), "--budget", "random:20"]) == 2
    assert "expected PLANNER=TRIALS" in capsys.readouterr().err
    assert benchmark_main([str(TRMC), "--first-seed", "-1"]) == 2
    assert "--first-seed at least 0" in capsys.readouterr().err


# ---- a small real run --------------------------------------------------------------------------


def test_per_seed_bookkeeping_of_a_real_random_campaign(tmp_path: Path, trmc: tuple[Protocol, GroundTruth]) -> None:
    protocol, truth = trmc
    report = run_campaign_benchmark(TRMC, seeds=[3], planners=["random"], budgets={"random": 14}, workdir=tmp_path)
    json.dumps(report)  # the whole report is JSON-ready
    (record,) = report["planners"]["random"]["seeds"]
    assert record["trials"] == 14 and record["stop_reason"] == "budget: 14 of 14 trials done"

    # The fractions are the truth of the conditions the campaign file holds, in trial order.
    with Campaign.open(tmp_path / "random-seed3.sqlite") as campaign:
        trials = [t for t in campaign.store.trials() if t.state in ("measured", "failed")]
    assert [t.id for t in trials] == sorted(t.id for t in trials) and len(trials) == 14
    expected = [truth.value(t.conditions) / truth.optimum_value for t in trials]
    assert record["true_fraction_per_trial"] == pytest.approx(expected, abs=1e-4)
    assert record["failed_samples"] == sum(t.state == "failed" for t in trials)
    assert record["trials_to_target"] == trials_to_reach(expected)
    assert record["best_true_fraction"] == pytest.approx(max(expected), abs=1e-4)
    # The noisy measurements that drove the campaign scatter around the truth they are judged by.
    ratios = [t.values["phi_sum_mu_max"] / truth.value(t.conditions) for t in trials if t.state == "measured"]
    assert 0.7 < float(np.median(ratios)) < 1.3

    summary = report["planners"]["random"]
    assert summary["trials_to_target"] == [record["trials_to_target"]] and summary["budget"] == 14
    assert report["truth"]["optimum_value"] == truth.optimum_value
    assert report["overrides"]["random"]["budget"]["to"] == {"trials": 14}
    assert report["protocol"]["sha256"] == protocol.sha256
    assert {"python", "torch", "botorch", "git_commit"} <= set(report["software"])
    assert report["machine"]["cpu_count"] >= 1
    assert "random" in table(report) and "optimum" in table(report)
