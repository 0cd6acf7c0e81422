"""TRMC transient analysis against the simulator's ground truth, across the magnitudes of real films."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from closedloop.drivers.base import InstrumentContext
from closedloop.drivers.trmc_analysis import (
    ANALYSIS_NAME,
    ANALYSIS_VERSION,
    analyze_to_measurement,
    analyze_transient,
)
from closedloop.simulators.trmc.physics import (
    ELEMENTARY_CHARGE,
    Acquisition,
    Cavity,
    Excitation,
    Film,
    SimulatedTransient,
    Timebase,
    simulate_transient,
)
from closedloop.simulators.trmc.station import SimulatedTrmcStation

# Kinetics of the two families in DOMAIN.md: polymer:fullerene blends and lead-halide perovskites.
BLEND = Film(phi=0.3, sum_mu=1.0, k1=3e6, k2=3e-12, od=0.6, thickness_cm=1.2e-5)
PEROVSKITE = Film(phi=0.9, sum_mu=1.0, k1=1e6, k2=1e-10, od=1.2, thickness_cm=3e-5)
TARGET_SIGNAL = 3e-3  # |dPr/Pr| an operator aims for: well above noise, well inside the linear range


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def _film_with_peak(magnitude: float) -> tuple[Film, Excitation]:
    """A film whose true phi_sum_mu_max is `magnitude`, at a fluence (within the envelope) giving
    ~TARGET_SIGNAL. phi_sum_mu(t) is proportional to sum_mu, so sum_mu sets the magnitude exactly."""
    base = BLEND if magnitude <= 1e-2 else PEROVSKITE
    per_unit_mu = base.phi * base.sum_mu * Cavity().sensitivity(base) * ELEMENTARY_CHARGE * base.f_light
    fluence = float(np.clip(TARGET_SIGNAL / (per_unit_mu * magnitude / base.phi), 1e12, 1e16))
    excitation = Excitation(fluence=fluence)
    unit = simulate_transient(base, excitation, Cavity(), Acquisition(), np.random.default_rng(0))
    film = Film(**{**base.__dict__, "sum_mu": magnitude / unit.truth.phi_sum_mu_max})
    return film, excitation


def _measure(film: Film, excitation: Excitation, seed: int, **acquisition: float) -> SimulatedTransient:
    acq = Acquisition(**{"averages": 64, "baseline_offset": 3e-5, **acquisition})
    return simulate_transient(film, excitation, Cavity(), acq, np.random.default_rng(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("magnitude", [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
def test_recovers_the_true_peak_and_half_time(magnitude: float, seed: int) -> None:
    film, excitation = _film_with_peak(magnitude)
    record = _measure(film, excitation, seed)
    assert record.truth.phi_sum_mu_max == pytest.approx(magnitude, rel=1e-6)
    result = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
    assert result.detected
    assert result.phi_sum_mu_max == pytest.approx(record.truth.phi_sum_mu_max, rel=0.05)
    assert result.tau_half_ns == pytest.approx(record.truth.tau_half_ns, rel=0.10)


def test_peak_estimate_is_not_the_biased_raw_maximum() -> None:
    """At a low signal the noisy maximum overshoots the truth; the analysis does not."""
    film, excitation = _film_with_peak(1e-3)
    weak = Excitation(fluence=excitation.fluence / 20.0)  # |dPr/Pr| ~ 1.5e-4, ~6x the noise per point
    errors, raw_errors = [], []
    for seed in range(8):
        record = _measure(film, weak, seed)
        result = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
        scale = -1.0 / (
            record.calibration["A"] * ELEMENTARY_CHARGE * weak.fluence * record.calibration["F_light"]
        )
        raw_max = np.max((record.dPr_over_Pr - result.baseline) * scale)
        errors.append(result.phi_sum_mu_max / record.truth.phi_sum_mu_max - 1.0)
        raw_errors.append(raw_max / record.truth.phi_sum_mu_max - 1.0)
    assert abs(np.mean(errors)) < 0.03
    assert np.mean(raw_errors) > 0.1


def test_noise_and_baseline_estimates_match_the_acquisition() -> None:
    film, excitation = _film_with_peak(1e-3)
    record = _measure(film, excitation, seed=4, baseline_offset=-4e-5)
    result = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
    assert result.noise == pytest.approx(Acquisition(averages=64).noise_per_point, rel=0.15)
    assert result.baseline == pytest.approx(-4e-5, abs=5e-6)


def test_failed_film_reports_no_signal_and_a_failed_sample() -> None:
    failed = Film(**{**BLEND.__dict__, "phi": 0.0})
    for seed in range(10):
        record = _measure(failed, Excitation(fluence=3e14), seed)
        result = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
        assert not result.detected
        assert result.phi_sum_mu_max == 0.0
        assert math.isnan(result.tau_half_ns)
    measurement = analyze_to_measurement(record.time_s, record.dPr_over_Pr, record.calibration)
    assert measurement.status == "failed_sample"
    assert measurement.values == {}
    assert "no photoconductive signal" in measurement.detail


def test_a_weak_signal_three_times_the_detection_limit_is_detected() -> None:
    failed = Film(**{**BLEND.__dict__, "phi": 0.0})
    record = _measure(failed, Excitation(fluence=3e14), seed=0)
    limit = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration).detection_limit
    film, excitation = _film_with_peak(1e-3)
    weak = Excitation(fluence=excitation.fluence * 3.0 * limit / 1e-3 * (3e14 / excitation.fluence))
    for seed in range(5):
        record = _measure(film, weak, seed)
        result = analyze_transient(record.time_s, record.dPr_over_Pr, record.calibration)
        assert result.detected
        assert result.phi_sum_mu_max == pytest.approx(record.truth.phi_sum_mu_max, rel=0.3)


def test_fits_recover_a_known_biexponential_decay() -> None:
    """A record built directly as A1 e^{-t/tau1} + A2 e^{-t/tau2} after an instantaneous rise."""
    time_s = Timebase(dt_s=1e-9, n_points=4000).times()
    calibration = {"A": 1.0, "I0": 1.0, "F_light": 1.0 / ELEMENTARY_CHARGE}  # dPr/Pr = -phi_sum_mu
    rng = np.random.default_rng(0)
    t = np.clip(time_s, 0.0, None)
    decay = 2e-3 * np.exp(-t / 40e-9) + 1e-3 * np.exp(-t / 600e-9)
    trace = -np.where(time_s >= 0, decay, 0.0) + rng.normal(0.0, 1e-5, time_s.size)
    fits = analyze_transient(time_s, trace, calibration).fits
    bi = fits["biexponential"]
    assert bi["ok"]
    p = bi["params"]
    assert p["tau1"] == pytest.approx(40e-9, rel=0.05)
    assert p["tau2"] == pytest.approx(600e-9, rel=0.05)
    assert p["A2"] == pytest.approx(1e-3, rel=0.05)
    assert bi["chi2_reduced"] == pytest.approx(1.0, abs=0.15)
    assert fits["stretched_exponential"]["ok"]
    assert fits["stretched_exponential"]["params"]["beta"] < 0.9  # two rates look stretched


def test_fits_recover_a_stretched_exponential() -> None:
    time_s = Timebase(dt_s=1e-9, n_points=4000).times()
    calibration = {"A": 1.0, "I0": 1.0, "F_light": 1.0 / ELEMENTARY_CHARGE}
    t = np.clip(time_s, 0.0, None)
    trace = -np.where(time_s >= 0, 3e-3 * np.exp(-((t / 200e-9) ** 0.6)), 0.0)
    trace += np.random.default_rng(1).normal(0.0, 1e-5, time_s.size)
    stretched = analyze_transient(time_s, trace, calibration).fits["stretched_exponential"]
    assert stretched["ok"]
    assert stretched["params"]["beta"] == pytest.approx(0.6, rel=0.05)
    assert stretched["params"]["tau"] == pytest.approx(200e-9, rel=0.05)


def test_measurement_carries_values_units_and_json_artifacts() -> None:
    film, excitation = _film_with_peak(1e-3)
    record = _measure(film, excitation, seed=0)
    m = analyze_to_measurement(record.time_s, record.dPr_over_Pr, record.calibration, instrument="trmc-1")
    assert m.status == "ok"
    assert set(m.values) == {"phi_sum_mu_max", "tau_half"}
    assert m.units == {"phi_sum_mu_max": "cm^2/(V*s)", "tau_half": "ns"}
    assert (m.analysis, m.analysis_version, m.instrument) == (ANALYSIS_NAME, ANALYSIS_VERSION, "trmc-1")
    text = json.dumps(m.artifacts["fits"], allow_nan=False)
    assert json.loads(text)["summary"]["phi_sum_mu_max"] == pytest.approx(m.values["phi_sum_mu_max"])
    assert np.array_equal(m.artifacts["dPr_over_Pr"], record.dPr_over_Pr)


def test_station_records_analyze_back_to_the_station_truth() -> None:
    station = SimulatedTrmcStation(seed=5, failure_rate_scale=0.0)
    conditions = {
        "acceptor_fraction": 0.5,
        "anneal_temp": 140.0,
        "anneal_time": 10.0,
        "spin_speed": 1500,
        "solvent": "chlorobenzene",
    }
    for trial_id in range(3):
        truth = station.run(conditions, InstrumentContext(clock=VirtualClock(), trial_id=trial_id))
        a = truth.artifacts
        measured = analyze_to_measurement(a["time_s"], a["dPr_over_Pr"], a["calibration"])
        assert measured.values["phi_sum_mu_max"] == pytest.approx(truth.values["phi_sum_mu_max"], rel=0.05)
        assert measured.values["tau_half"] == pytest.approx(truth.values["tau_half"], rel=0.10)


@pytest.mark.parametrize(
    ("time_s", "trace", "calibration", "message"),
    [
        (np.arange(100.0) - 30, np.zeros(99), {"A": 1, "I0": 1, "F_light": 1}, "equal length"),
        (np.arange(100.0), np.zeros(100), {"A": 1, "I0": 1, "F_light": 1}, "pre-trigger"),
        (np.arange(100.0) - 30, np.zeros(100), {"A": 1, "I0": 1}, "F_light"),
        (np.arange(100.0) - 30, np.zeros(100), {"A": 1, "I0": 0, "F_light": 1}, "positive"),
        (np.arange(100.0) - 30, np.full(100, np.nan), {"A": 1, "I0": 1, "F_light": 1}, "finite"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    time_s: np.ndarray, trace: np.ndarray, calibration: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_transient(time_s, trace, calibration)
