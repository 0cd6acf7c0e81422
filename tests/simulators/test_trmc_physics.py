"""TRMC transient physics: kinetics against a reference integrator, fluence and averaging behaviour."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from closedloop.simulators.trmc.physics import (
    ELEMENTARY_CHARGE,
    Acquisition,
    Cavity,
    Excitation,
    Film,
    Timebase,
    carrier_fraction,
    cavity_filter,
    choose_timebase,
    generated_density,
    simulate_transient,
)

BLEND = Film(phi=0.3, sum_mu=0.02, k1=3e6, k2=3e-12, od=0.6, thickness_cm=1.2e-5)


def _record(film: Film, fluence: float, seed: int = 0, **acquisition: float) -> object:
    return simulate_transient(
        film, Excitation(fluence=fluence), Cavity(), Acquisition(**acquisition), np.random.default_rng(seed)
    )


def test_kinetics_match_a_reference_ode_solver() -> None:
    excitation = Excitation(fluence=1e15)
    time_s = choose_timebase(BLEND, excitation, Cavity()).times()
    n_gen = generated_density(BLEND, excitation)
    sigma = excitation.fwhm_s / (2.0 * math.sqrt(2.0 * math.log(2.0)))

    def rate(t: float, n: np.ndarray) -> list[float]:
        generation = n_gen * math.exp(-0.5 * (t / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
        return [generation - BLEND.k1 * n[0] - BLEND.k2 * n[0] ** 2]

    reference = solve_ivp(
        rate, (time_s[0], time_s[-1]), [0.0], t_eval=time_s, rtol=1e-10, atol=1e2, max_step=2e-10
    ).y[0]
    u = carrier_fraction(time_s, excitation.interval_weights(time_s), BLEND.k1, BLEND.k2 * n_gen)[0]
    assert np.max(np.abs(u - reference / n_gen)) < 1e-3
    assert u.max() > 0.3  # the comparison covers a real, strongly second-order transient


def test_every_absorbed_photon_is_accounted_for_in_the_linear_regime() -> None:
    """With k2 = 0, integral of n/n_gen dt = 1/k1 (each carrier lives 1/k1 on average)."""
    time_s = Timebase(dt_s=2e-9, n_points=20_000).times()
    weights = Excitation(fluence=1e14).interval_weights(time_s)
    u = carrier_fraction(time_s, weights, 3e6, 0.0)[0]
    assert np.sum(u) * 2e-9 * 3e6 == pytest.approx(1.0, rel=2e-3)


def test_cavity_filter_has_the_cavity_time_constant() -> None:
    cavity = Cavity(q=2500.0, f0_hz=9.1e9)
    assert cavity.tau_cav_s == pytest.approx(43.7e-9, rel=0.01)
    dt = 0.1e-9
    step = np.ones(5000)
    response = cavity_filter(step, dt, cavity.tau_cav_s)
    at_tau = response[round(cavity.tau_cav_s / dt) - 1]
    assert at_tau == pytest.approx(1.0 - math.exp(-1.0), abs=3e-3)


def test_signal_size_matches_the_literature_calibration() -> None:
    """~5e-3 in dPr/Pr for phi_sum_mu 1e-4 at 9e15 photons/cm^2 (slowly decaying film, ~70 % absorbed)."""
    film = Film(phi=0.01, sum_mu=0.01, k1=1e5, k2=0.0, od=0.55, thickness_cm=1e-5)
    record = _record(film, 9e15)
    assert record.truth.phi_sum_mu_max == pytest.approx(1e-4, rel=0.05)
    assert -record.clean_dPr_over_Pr.min() == pytest.approx(5e-3, rel=0.25)


def test_signal_scales_with_fluence_in_the_linear_regime() -> None:
    low, high = _record(BLEND, 1e11), _record(BLEND, 1e12)
    ratio = high.clean_dPr_over_Pr.min() / low.clean_dPr_over_Pr.min()
    assert ratio == pytest.approx(10.0, rel=0.01)
    assert high.truth.phi_sum_mu_max == pytest.approx(low.truth.phi_sum_mu_max, rel=0.01)


def test_bimolecular_recombination_lowers_the_peak_at_high_fluence() -> None:
    fluences = [1e12, 1e13, 1e14, 1e15, 1e16]
    peaks = [_record(BLEND, f).truth.phi_sum_mu_max for f in fluences]
    assert all(b < a for a, b in zip(peaks, peaks[1:], strict=False))
    assert peaks[-1] < 0.3 * peaks[0]
    halves = [_record(BLEND, f).truth.tau_half_ns for f in fluences]
    assert halves[-1] < 0.5 * halves[0]  # and the decay speeds up


def test_noise_falls_as_one_over_square_root_of_averages() -> None:
    film_without_signal = Film(phi=0.0, sum_mu=0.02, k1=3e6, k2=3e-12, od=0.6, thickness_cm=1.2e-5)
    sd = {}
    for averages in (16, 256):
        record = _record(film_without_signal, 1e14, seed=3, averages=averages, fluence_jitter=0.0)
        sd[averages] = float(np.std(record.dPr_over_Pr))
    assert sd[16] / sd[256] == pytest.approx(4.0, rel=0.1)
    at_64 = sd[256] * math.sqrt(256 / 64)
    assert 1e-5 <= at_64 <= 5e-5  # the literature's band for a typical averaged trace


def test_a_failed_film_gives_only_noise_and_a_zero_truth() -> None:
    failed = Film(phi=0.0, sum_mu=0.02, k1=3e6, k2=3e-12, od=0.6, thickness_cm=1.2e-5)
    record = _record(failed, 3e14, baseline_offset=2e-5)
    assert record.truth.phi_sum_mu_max == 0.0
    assert math.isnan(record.truth.tau_half_ns)
    assert not np.any(record.clean_dPr_over_Pr)
    assert abs(np.mean(record.dPr_over_Pr) - 2e-5) < 3e-6


def test_same_seed_same_record_and_different_seed_different_noise() -> None:
    a, b, c = _record(BLEND, 3e14, seed=7), _record(BLEND, 3e14, seed=7), _record(BLEND, 3e14, seed=8)
    assert np.array_equal(a.dPr_over_Pr, b.dPr_over_Pr)
    assert not np.array_equal(a.dPr_over_Pr, c.dPr_over_Pr)
    assert a.truth == c.truth  # the truth is noise-free


def test_calibration_reproduces_phi_sum_mu_from_the_clean_record() -> None:
    record = _record(BLEND, 3e14)
    cal = record.calibration
    phi_sum_mu = -record.clean_dPr_over_Pr / (cal["A"] * ELEMENTARY_CHARGE * cal["I0"] * cal["F_light"])
    assert phi_sum_mu.max() == pytest.approx(record.truth.phi_sum_mu_max, rel=1e-3)
    assert cal["F_light"] == pytest.approx((1 - 10**-BLEND.od) / BLEND.thickness_cm)
    assert {"A", "I0", "F_light", "f0", "Q", "tau_cav", "averages", "wavelength", "fluence"} <= set(cal)


def test_tau_half_is_measured_from_the_peak_of_the_cavity_convolved_signal() -> None:
    """First-order decay tau through the cavity tau_c: y(t) ~ exp(-t/tau) - exp(-t/tau_c) (analytic)."""
    film = Film(phi=0.3, sum_mu=0.02, k1=2e6, k2=0.0, od=0.6, thickness_cm=1.2e-5)
    truth = _record(film, 1e14).truth
    tau, tau_c = 1.0 / film.k1, Cavity().tau_cav_s

    def shape(t: float) -> float:
        return tau / (tau - tau_c) * (math.exp(-t / tau) - math.exp(-t / tau_c))

    t_peak = tau * tau_c / (tau - tau_c) * math.log(tau / tau_c)
    t_half = brentq(lambda t: shape(t) - 0.5 * shape(t_peak), t_peak, 20 * tau)
    assert truth.t_peak_ns == pytest.approx(t_peak * 1e9, rel=0.02)
    assert truth.tau_half_ns == pytest.approx((t_half - t_peak) * 1e9, rel=0.01)
    assert truth.phi_sum_mu_max == pytest.approx(film.phi * film.sum_mu * shape(t_peak), rel=0.01)


def test_flash_excitation_gives_a_slow_rise() -> None:
    flash = Excitation(fluence=3e14, kind="flash", fwhm_s=10e-6)
    record = simulate_transient(BLEND, flash, Cavity(), Acquisition(), np.random.default_rng(0))
    assert 1_000 < record.truth.t_peak_ns < 10_000
    assert record.time_s[0] < 0


def test_one_laser_transient_is_fast() -> None:
    rng = np.random.default_rng(0)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        simulate_transient(BLEND, Excitation(fluence=3e14), Cavity(), Acquisition(), rng)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05


@pytest.mark.parametrize(
    ("field", "value"), [("k1", 0.0), ("thickness_cm", -1e-5), ("phi", -0.1), ("od", float("nan"))]
)
def test_unphysical_film_is_refused_by_name(field: str, value: float) -> None:
    kwargs = {"phi": 0.3, "sum_mu": 0.02, "k1": 3e6, "k2": 3e-12, "od": 0.6, "thickness_cm": 1.2e-5}
    with pytest.raises(ValueError, match=field):
        Film(**{**kwargs, field: value})
