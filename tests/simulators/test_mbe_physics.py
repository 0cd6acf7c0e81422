"""MBE chamber physics: Arrhenius cells, rate-limited ramps, virtual-time speed, RHEED oscillations."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.optimize import curve_fit

from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.base import InstrumentContext
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.simulators.mbe import EXAMPLE_FIXED, SimulatedMbeSystem
from closedloop.simulators.mbe.cells import (
    BOLTZMANN_EV_PER_K,
    EffusionCell,
    FluxGauge,
    Interlock,
    PressureModel,
    TemperatureController,
)
from closedloop.simulators.mbe.chamber import RU_CELL, SR_CELL, Aging, Chamber
from closedloop.simulators.mbe.growth import MONOLAYER_ANGSTROM, MeasurementScatter

MAX_RATE = {
    name: float(MBE_ENVELOPE.limits[name].max_rate)
    for name in ("sr_cell_temp", "ru_cell_temp", "substrate_temp")
}
BEST = {**EXAMPLE_FIXED, "ru_cell_temp": 1877.0, "substrate_temp": 760.0, "ozone_flow": 6.0}


def run(mbe: SimulatedMbeSystem, conditions: dict[str, float], trial_id: int = 1):
    return mbe.run(conditions, InstrumentContext(clock=StationClock(0.0), trial_id=trial_id))


# --- cells ------------------------------------------------------------------------------------------


def test_a_gallium_like_cell_changes_flux_about_two_percent_per_kelvin_near_930_c() -> None:
    ga = EffusionCell.calibrated("Ga", at_celsius=930.0, bep_torr=1.7e-7, ea_ev=2.65, atoms_per_torr=1.3e21)
    numeric = (ga.bep(930.5) / ga.bep(929.5)) - 1.0
    assert 0.019 < numeric < 0.023
    assert ga.bep(930.0) == pytest.approx(1.7e-7, rel=1e-12)


@pytest.mark.parametrize("cell, working_c", [(SR_CELL, 470.0), (RU_CELL, 1860.0)])
def test_cell_flux_is_arrhenius_with_its_activation_energy(cell: EffusionCell, working_c: float) -> None:
    temps = np.linspace(working_c - 40.0, working_c + 40.0, 9)
    inverse_kt = 1.0 / (BOLTZMANN_EV_PER_K * (temps + 273.15))
    slope, _ = np.polyfit(inverse_kt, np.log(cell.bep(temps)), 1)
    assert -slope == pytest.approx(cell.ea_ev, rel=1e-6)
    numeric = (math.log(cell.bep(working_c + 0.01)) - math.log(cell.bep(working_c - 0.01))) / 0.02
    assert numeric == pytest.approx(cell.relative_slope_per_k(working_c), rel=1e-4)
    assert 0.01 < numeric < 0.05  # percent-per-kelvin sensitivity, as real cells have


def test_depletion_and_a_drifting_thermocouple_lower_the_flux() -> None:
    chamber = Chamber(MAX_RATE)
    chamber.ramp("ru_cell_temp", 1860.0, MAX_RATE["ru_cell_temp"])
    chamber.advance(6 * 3600.0)
    fresh = chamber.beam_bep("ru")
    chamber.aging = Aging(tc_offset_k={"ru_cell_temp": 2.0}, depletion={"ru_cell_temp": 0.05})
    aged = chamber.beam_bep("ru")
    expected = 0.95 * math.exp(-2.0 * RU_CELL.relative_slope_per_k(1860.0))
    assert aged / fresh == pytest.approx(expected, rel=2e-3)


def test_opening_a_shutter_dips_the_flux_which_then_recovers() -> None:
    transient = SR_CELL.shutter_transient(np.array([0.0, 30.0, 600.0]))
    assert transient[0] == pytest.approx(1.0 - SR_CELL.shutter_dip)
    assert transient[0] < transient[1] < transient[2]
    assert transient[2] == pytest.approx(1.0, abs=1e-5)
    t = np.array([200.0])
    fine = np.linspace(0.0, 200.0, 20001)
    assert SR_CELL.integrated_transient(t)[0] == pytest.approx(
        np.trapezoid(SR_CELL.shutter_transient(fine), fine), rel=1e-7
    )


# --- controllers and ramps ---------------------------------------------------------------------------


def test_controller_closed_form_matches_a_fine_numerical_integration() -> None:
    controller = TemperatureController("substrate_temp", process_value=200.0, tau_s=90.0)
    controller.command(750.0, 30.0)
    times = np.linspace(0.0, 2400.0, 241)
    working, process = controller.trajectory(times)
    dt, pv, w, t = 0.01, 200.0, 200.0, 0.0
    euler = []
    for target_t in times:
        while t < target_t - 1e-9:
            w = min(750.0, w + 30.0 / 60.0 * dt)
            pv += (w - pv) / 90.0 * dt
            t += dt
        euler.append(pv)
    assert np.max(np.abs(process - np.array(euler))) < 0.05
    assert working[-1] == 750.0 and working[10] == pytest.approx(200.0 + 0.5 * times[10])


def test_ramps_never_exceed_the_rate_limit_and_take_delta_over_rate() -> None:
    chamber = Chamber(MAX_RATE)
    chamber.start_trace(np.random.default_rng(0))
    plan = [
        ("ru_cell_temp", 1880.0),
        ("substrate_temp", 820.0),
        ("sr_cell_temp", 520.0),
        ("ru_cell_temp", 1500.0),
    ]
    for name, target in plan:
        start = chamber.controllers[name].working_setpoint
        seconds = chamber.ramp(name, target, MAX_RATE[name])
        assert seconds == pytest.approx(abs(target - start) / MAX_RATE[name] * 60.0)
        chamber.advance(1234.0)
    chamber.advance(5 * 3600.0)
    trace = chamber.stop_trace()
    t = trace["temp_t_s"]
    for name, limit in MAX_RATE.items():
        for kind in ("setpoint", "reading"):
            series = trace[f"{name}_{kind}"]
            slope = np.abs(np.diff(series)) / np.diff(t) * 60.0
            # readings carry 0.5 K noise over 30 s samples: allow for it, not for a faster ramp
            allowance = 1e-9 if kind == "setpoint" else 4 * 0.5 * math.sqrt(2) / 30.0 * 60.0
            assert slope.max() <= limit + allowance, name
        assert np.ptp(trace[f"{name}_setpoint"]) > 100.0  # every heater really ramped


def test_the_chamber_refuses_a_ramp_faster_than_its_heater_allows() -> None:
    chamber = Chamber(MAX_RATE)
    with pytest.raises(ValueError, match="exceeds this heater's limit 10.0"):
        chamber.ramp("ru_cell_temp", 1800.0, 25.0)
    assert chamber.events == []


def test_settling_time_brings_the_reading_within_tolerance() -> None:
    chamber = Chamber(MAX_RATE)
    chamber.ramp("substrate_temp", 700.0, MAX_RATE["substrate_temp"])
    wait = chamber.seconds_until_stable(0.5)
    assert wait > 1000.0  # 500 K at 30 K/min is 1000 s, plus the lag
    chamber.advance(wait)
    assert abs(chamber.reading("substrate_temp") - 700.0) <= 0.5 + 1e-9


# --- gauge, pressure, interlock ----------------------------------------------------------------------


def test_pressure_rises_with_ozone_and_the_interlock_trips_above_its_limit() -> None:
    model = PressureModel()
    quiet = model.pressure(0.0, [300.0, 1200.0, 200.0])
    with_ozone = model.pressure(10.0, [300.0, 1200.0, 200.0])
    assert with_ozone - quiet == pytest.approx(10.0 * model.torr_per_sccm_ozone)
    interlock = Interlock()
    assert interlock.permits_heating(quiet) and interlock.tripped is None
    assert not interlock.permits_heating(with_ozone)
    assert "above the interlock limit" in (interlock.tripped or "")


def test_flux_gauge_scatter_is_a_few_percent_and_needs_the_gauge_in() -> None:
    gauge = FluxGauge()
    rng = np.random.default_rng(5)
    with pytest.raises(RuntimeError, match="retracted"):
        gauge.read(rng, 5e-8, 1e-9)
    gauge.inserted = True
    readings = np.array([gauge.read(rng, 5e-8, 0.0) for _ in range(4000)])
    assert readings.std() / readings.mean() == pytest.approx(0.025, rel=0.1)


def test_temperature_readings_carry_half_a_kelvin_of_noise() -> None:
    chamber = Chamber(MAX_RATE)
    chamber.start_trace(np.random.default_rng(2))
    chamber.advance(3600.0)
    trace = chamber.stop_trace()
    residual = trace["sr_cell_temp_reading"] - trace["sr_cell_temp_setpoint"]
    assert residual.std() == pytest.approx(0.5, rel=0.2)


# --- speed and RHEED ---------------------------------------------------------------------------------


def test_a_two_hour_growth_simulates_in_under_50_ms() -> None:
    mbe = SimulatedMbeSystem(seed=3)
    run(mbe, BEST, trial_id=1)  # warm caches and imports; the chamber idles between trials anyway
    started = time.perf_counter()
    measurement = run(mbe, {**BEST, "growth_time": 120.0}, trial_id=2)
    wall = time.perf_counter() - started
    assert wall < 0.05
    assert measurement.duration_s > 2 * 3600.0


def _oscillation(t: np.ndarray, background: float, amplitude: float, tau: float, period: float, phase: float):
    return background + amplitude * np.exp(-t / tau) * np.cos(2 * np.pi * t / period + phase)


def fit_rheed(t: np.ndarray, intensity: np.ndarray) -> tuple[float, float]:
    """(period, damping time) of a RHEED trace; the period guess comes from the spectrum."""
    spectrum = np.abs(np.fft.rfft(intensity - intensity.mean()))
    freqs = np.fft.rfftfreq(t.size, t[1] - t[0])
    guess = 1.0 / freqs[1 + np.argmax(spectrum[1:])]
    start = (intensity[-50:].mean(), intensity[0] - intensity[-50:].mean(), 200.0, guess, 0.0)
    params, _ = curve_fit(_oscillation, t, intensity, p0=start, maxfev=20000)
    return abs(params[3]), abs(params[2])


@pytest.mark.parametrize("trial_id", [1, 2, 3])
def test_rheed_period_gives_back_the_growth_rate(trial_id: int) -> None:
    mbe = SimulatedMbeSystem(seed=11, scatter=MeasurementScatter(thickness=0.0))
    measurement = run(mbe, BEST, trial_id)
    period, _ = fit_rheed(measurement.artifacts["rheed_t_s"], measurement.artifacts["rheed_intensity"])
    assert MONOLAYER_ANGSTROM / period == pytest.approx(measurement.values["growth_rate"], rel=0.02)


def test_rheed_oscillations_damp_faster_outside_the_good_window() -> None:
    mbe = SimulatedMbeSystem(seed=4)
    off_window = {**BEST, "substrate_temp": 640.0, "ru_cell_temp": 1845.0}
    assert mbe.truth(off_window)["phase"] == "SrRuO3"  # a poor film, not a wrong phase
    good, poor = run(mbe, BEST, 1), run(mbe, off_window, 2)
    _, tau_good = fit_rheed(good.artifacts["rheed_t_s"], good.artifacts["rheed_intensity"])
    _, tau_poor = fit_rheed(poor.artifacts["rheed_t_s"], poor.artifacts["rheed_intensity"])
    assert tau_good > 3 * tau_poor
    assert mbe.truth(BEST)["rheed_damping_s"] > 3 * mbe.truth(off_window)["rheed_damping_s"]
