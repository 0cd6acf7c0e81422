"""The simulated TRMC station behind the Driver interface, and the process model's known optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.drivers.base import EnvelopeViolation, InstrumentContext
from closedloop.drivers.trmc import SOLVENTS, TRMC_DESCRIPTION
from closedloop.simulators.trmc.process import (
    SOLVENT_EFFECTS,
    SearchBox,
    TrmcProcessModel,
    example_protocol_constraint,
)
from closedloop.simulators.trmc.station import ANALYSIS_NAME, SimulatedTrmcStation

GOOD = {
    "acceptor_fraction": 0.5,
    "anneal_temp": 140.0,
    "anneal_time": 10.0,
    "spin_speed": 1500,
    "solvent": "o-dichlorobenzene",
}


class RecordingClock:
    """Virtual time that remembers every wait it was asked for."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class Journal:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, direction: str, text: str) -> None:
        self.lines.append((direction, text))


def _context(trial_id: int = 1) -> tuple[InstrumentContext, RecordingClock, Journal]:
    clock, journal = RecordingClock(), Journal()
    return InstrumentContext(clock=clock, trial_id=trial_id, journal=journal), clock, journal


@pytest.fixture(scope="module")
def model() -> TrmcProcessModel:
    return TrmcProcessModel()


@pytest.fixture(scope="module")
def constrained_optimum(model: TrmcProcessModel) -> tuple[dict, float]:
    return model.optimum([example_protocol_constraint])


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"anneal_temp": 300.0}, "anneal_temp"),
        ({"solvent": "water"}, "solvent"),
        ({"fluence": 1e18}, "fluence"),
    ],
)
def test_out_of_envelope_is_refused_before_anything_happens(change: dict, parameter: str) -> None:
    ctx, clock, journal = _context()
    station = SimulatedTrmcStation()
    with pytest.raises(EnvelopeViolation) as refused:
        station.run({**GOOD, **change}, ctx)
    assert refused.value.parameter == parameter
    assert journal.lines == [] and clock.sleeps == []


def test_a_missing_process_parameter_is_named_before_anything_happens() -> None:
    ctx, clock, journal = _context()
    conditions = {k: v for k, v in GOOD.items() if k != "spin_speed"}
    with pytest.raises(EnvelopeViolation, match="spin_speed"):
        SimulatedTrmcStation().run(conditions, ctx)
    assert journal.lines == [] and clock.sleeps == []


def test_virtual_time_covers_anneal_and_acquisition() -> None:
    ctx, clock, journal = _context()
    m = SimulatedTrmcStation(averages=128, failure_rate_scale=0.0).run({**GOOD, "anneal_time": 20.0}, ctx)
    anneal_plus_acquisition = 20.0 * 60.0 + 128 / 10.0
    assert m.duration_s == pytest.approx(sum(clock.sleeps))
    assert clock.t - 1000.0 == pytest.approx(m.duration_s)
    assert anneal_plus_acquisition < m.duration_s < anneal_plus_acquisition + 180.0
    assert 20.0 * 60.0 in clock.sleeps
    sent = [text for direction, text in journal.lines if direction == "tx"]
    assert any(text.startswith("ANNEAL 140.0 C 20.00 MIN") for text in sent)
    assert any("AVG 128" in text for text in sent)
    assert any(direction == "rx" and text.startswith("F0 ") for direction, text in journal.lines)


def test_measurement_has_truth_values_and_raw_transient() -> None:
    ctx, _, _ = _context()
    station = SimulatedTrmcStation(name="trmc-b", failure_rate_scale=0.0)
    m = station.run(GOOD, ctx)
    assert m.status == "ok"
    assert (m.analysis, m.instrument) == (ANALYSIS_NAME, "trmc-b")
    assert m.units == {"phi_sum_mu_max": "cm^2/(V*s)", "tau_half": "ns"}
    expected = station.truth(GOOD)
    # One sample: its own ~15 % scatter around the expectation, tau_half from the k1 scatter.
    assert m.values["phi_sum_mu_max"] == pytest.approx(expected["phi_sum_mu_max"], rel=0.6)
    assert m.values["tau_half"] == pytest.approx(expected["tau_half"], rel=0.4)
    a = m.artifacts
    assert a["time_s"].dtype == np.float64 and a["time_s"].shape == a["dPr_over_Pr"].shape
    assert a["dPr_over_Pr"].min() < -10 * np.std(a["dPr_over_Pr"][:100])  # a clear negative dPr/Pr signal
    assert {"A", "I0", "F_light", "f0", "Q", "tau_cav", "averages", "wavelength", "fluence"} <= set(
        a["calibration"]
    )


def test_same_seed_and_trial_id_give_the_identical_measurement() -> None:
    first = SimulatedTrmcStation(seed=3).run(GOOD, _context(trial_id=17)[0])
    again = SimulatedTrmcStation(seed=3).run(GOOD, _context(trial_id=17)[0])
    other = SimulatedTrmcStation(seed=3).run(GOOD, _context(trial_id=18)[0])
    assert first.values == again.values and first.status == again.status
    assert np.array_equal(first.artifacts["dPr_over_Pr"], again.artifacts["dPr_over_Pr"])
    assert not np.array_equal(first.artifacts["dPr_over_Pr"], other.artifacts["dPr_over_Pr"])


def test_failed_films_are_failed_samples_without_values() -> None:
    ctx, _, _ = _context()
    m = SimulatedTrmcStation(failure_rate_scale=1000.0).run(GOOD, ctx)
    assert m.status == "failed_sample"
    assert m.values == {}
    assert m.detail == "no photoconductive signal"
    trace = m.artifacts["dPr_over_Pr"]
    assert np.abs(trace - trace.mean()).max() < 6 * np.std(trace)  # noise only


def test_failures_happen_where_the_process_is_extreme(model: TrmcProcessModel) -> None:
    station = SimulatedTrmcStation(seed=1)
    harsh = {**GOOD, "anneal_temp": 200.0, "anneal_time": 10.0, "spin_speed": 4000}
    failed_good = sum(station.run(GOOD, _context(i)[0]).status == "failed_sample" for i in range(40))
    failed_harsh = sum(station.run(harsh, _context(i)[0]).status == "failed_sample" for i in range(40))
    assert failed_good <= 6
    assert failed_harsh >= 30
    assert model.failure_probability(harsh) > 10 * model.failure_probability(GOOD)


def test_driver_verbs() -> None:
    station = SimulatedTrmcStation()
    assert station.describe() is TRMC_DESCRIPTION
    station.check(GOOD)
    with pytest.raises(EnvelopeViolation):
        station.check({**GOOD, "spin_speed": 100})
    assert station.recover(1, _context()[0]) is None
    station.safe_state()
    station.close()


def test_sample_scatter_is_fifteen_percent_lognormal(model: TrmcProcessModel) -> None:
    expected = model.expected_film(GOOD).sum_mu
    rng = np.random.default_rng(0)
    factors = np.array([model.sample_film(GOOD, rng)[0].sum_mu / expected for _ in range(2000)])
    assert factors.mean() == pytest.approx(1.0, abs=0.015)
    assert factors.std() == pytest.approx(0.15, abs=0.015)
    assert np.all(factors > 0)


def test_process_response_has_the_literature_shape(model: TrmcProcessModel) -> None:
    fractions = np.linspace(0.2, 0.8, 61)
    by_fraction = model.peak_values([{**GOOD, "acceptor_fraction": float(f)} for f in fractions])
    assert 0.45 <= fractions[np.argmax(by_fraction)] <= 0.56
    temps = np.arange(60.0, 201.0, 5.0)
    by_temp = model.peak_values([{**GOOD, "anneal_temp": float(t)} for t in temps])
    best_temp = temps[np.argmax(by_temp)]
    assert 130.0 <= best_temp <= 160.0
    assert by_temp[temps == 80.0][0] < 0.3 * by_temp.max()  # little happens below ~80-100 C
    assert by_temp[temps == 190.0][0] < 0.5 * by_temp.max()  # decline above ~170 C
    assert set(SOLVENT_EFFECTS) == set(SOLVENTS)  # every solvent the station accepts has a modelled effect
    solvents = {s: model.true_phi_sum_mu_max({**GOOD, "solvent": s}) for s in SOLVENTS}
    assert max(solvents, key=solvents.__getitem__) == "o-dichlorobenzene"
    assert max(solvents.values()) > 2 * min(solvents.values())


def test_peak_values_batch_agrees_with_single_truth(model: TrmcProcessModel) -> None:
    rng = np.random.default_rng(2)
    points = [SearchBox().sample(rng) for _ in range(20)]
    batch = model.peak_values(points)
    single = np.array([model.true_phi_sum_mu_max(p) for p in points])
    assert np.allclose(batch, single, rtol=2e-3)


@pytest.mark.slow
def test_optimum_beats_random_legal_points(model: TrmcProcessModel, constrained_optimum: tuple) -> None:
    conditions, value = constrained_optimum
    assert example_protocol_constraint(conditions) <= 1e-6
    box = SearchBox()
    assert box.acceptor_fraction[0] <= conditions["acceptor_fraction"] <= box.acceptor_fraction[1]
    assert conditions["spin_speed"] % 100 == 0 and isinstance(conditions["spin_speed"], int)
    assert value == pytest.approx(model.true_phi_sum_mu_max(conditions))
    rng = np.random.default_rng(7)
    points = [box.sample(rng, [example_protocol_constraint]) for _ in range(200)]
    assert value >= model.peak_values(points).max()


def test_landscape_is_neither_flat_nor_a_needle(model: TrmcProcessModel, constrained_optimum: tuple) -> None:
    """A few percent of the legal space is within 90 % of the optimum: random search needs ~100 trials,
    a GP-guided search a few tens."""
    _, best = constrained_optimum
    rng = np.random.default_rng(11)
    values = model.peak_values([SearchBox().sample(rng, [example_protocol_constraint]) for _ in range(2000)])
    near = np.mean(values >= 0.9 * best)
    assert 0.003 <= near <= 0.05
    assert np.median(values) < 0.5 * best  # most of the space is clearly worse: not flat


def test_tau_half_trades_off_against_the_peak(model: TrmcProcessModel, constrained_optimum: tuple) -> None:
    """Two objectives worth a Pareto front: longer-lived films exist, but only with lower peaks."""
    conditions, best = constrained_optimum
    tau_at_best = model.true_tau_half(conditions)
    rng = np.random.default_rng(5)
    points = [SearchBox().sample(rng, [example_protocol_constraint]) for _ in range(300)]
    peaks = model.peak_values(points)
    taus = np.array([model.true_tau_half(p) for p in points])
    front = [i for i in range(len(points)) if not np.any((peaks > peaks[i]) & (taus > taus[i]))]
    assert len(front) >= 5
    assert taus[front].max() > 1.3 * tau_at_best
    assert peaks[np.argmax(taus)] < 0.5 * best
    assert np.all(np.isfinite(taus)) and taus.min() > 30.0


def test_station_optimum_and_truth_delegate_to_the_model(model: TrmcProcessModel) -> None:
    station = SimulatedTrmcStation()
    one_solvent = SearchBox(solvents=("chlorobenzene",))
    conditions, value = station.optimum((example_protocol_constraint,), one_solvent)
    assert (conditions, value) == model.optimum([example_protocol_constraint], one_solvent)
    assert conditions["solvent"] == "chlorobenzene"
    assert station.truth(conditions)["phi_sum_mu_max"] == pytest.approx(value)
    assert math.isfinite(station.truth(conditions)["tau_half"])
