"""The SrRuO3 growth-outcome model: a known optimum, a failure region, trends a grower would recognise,
and flux noise of about 2 % reaching the film."""

from __future__ import annotations

import math

import numpy as np
import pytest

from closedloop.simulators.mbe import EXAMPLE_FIXED, EXAMPLE_RANGES, SimulatedMbeSystem
from closedloop.simulators.mbe.chamber import FLUX_NOISE, SR_CELL, Chamber
from closedloop.simulators.mbe.growth import SrRuO3Window, grow
from closedloop.simulators.mbe.station import HEATERS


@pytest.fixture(scope="module")
def mbe() -> SimulatedMbeSystem:
    return SimulatedMbeSystem(seed=0)


def random_legal_points(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [
        {
            **EXAMPLE_FIXED,
            **{name: float(rng.uniform(low, high)) for name, (low, high) in EXAMPLE_RANGES.items()},
        }
        for _ in range(n)
    ]


def test_optimum_beats_every_random_legal_point(mbe: SimulatedMbeSystem) -> None:
    best_conditions, best_rrr = mbe.optimum()
    assert 60.0 <= best_rrr <= 85.0  # the published best SrRuO3 films: RRR ~80
    assert mbe.truth(best_conditions)["rrr"] == pytest.approx(best_rrr)
    for name, (low, high) in EXAMPLE_RANGES.items():
        assert low < best_conditions[name] < high, f"optimum on the {name} boundary"
    expected = [mbe.truth(p).get("rrr", 0.0) for p in random_legal_points(500, seed=1)]
    assert best_rrr >= max(expected)
    # and the top is a small target: few random growths come within 10 % of it
    assert np.mean(np.array(expected) >= 0.9 * best_rrr) < 0.05


def test_a_failure_region_covers_a_fifth_to_a_third_of_the_space(mbe: SimulatedMbeSystem) -> None:
    phases = [str(mbe.truth(p)["phase"]) for p in random_legal_points(2000, seed=2)]
    failed = [p for p in phases if p != "SrRuO3"]
    assert 0.20 <= len(failed) / len(phases) <= 0.35
    assert all(p.startswith("wrong phase: ") for p in failed)
    reasons = {p.split(" (")[0] for p in failed}
    for reason in ("Ru-rich", "Ru-poor", "too cold", "too hot", "under-oxidised"):
        assert any(reason in r for r in reasons), reason


def test_truth_classifies_deterministically_and_a_wrong_phase_has_no_rrr(mbe: SimulatedMbeSystem) -> None:
    best, _ = mbe.optimum()
    ru_rich = {**best, "ru_cell_temp": 1890.0, "substrate_temp": 600.0}
    first, again = mbe.truth(ru_rich), SimulatedMbeSystem(seed=99).truth(ru_rich)
    assert first == again
    assert str(first["phase"]).startswith("wrong phase: Ru-rich")
    assert "rrr" not in first and "xrd_fwhm" not in first
    assert float(first["growth_rate"]) > 0


def test_film_quality_trends_a_grower_would_recognise(mbe: SimulatedMbeSystem) -> None:
    best, best_rrr = mbe.optimum()
    # moving off the optimum in any direction lowers RRR and broadens the rocking curve
    for name, step in (("ru_cell_temp", 6.0), ("substrate_temp", 40.0), ("ozone_flow", 3.0)):
        for sign in (-1, 1):
            moved = mbe.truth({**best, name: best[name] + sign * step})
            if "rrr" in moved:
                assert moved["rrr"] < best_rrr
                assert moved["xrd_fwhm"] > mbe.truth(best)["xrd_fwhm"]

    # RuO4 desorbs more from a hotter substrate: the best Ru flux rises with substrate temperature
    def best_ru(substrate_c: float) -> float:
        grid = np.linspace(*EXAMPLE_RANGES["ru_cell_temp"], 301)
        rrr = [
            mbe.truth({**best, "substrate_temp": substrate_c, "ru_cell_temp": t}).get("rrr", 0.0)
            for t in grid
        ]
        return float(grid[int(np.argmax(rrr))])

    assert best_ru(800.0) > best_ru(700.0) + 5.0


def test_growth_is_sr_limited_when_ru_rich(mbe: SimulatedMbeSystem) -> None:
    best, _ = mbe.optimum()
    rates = [mbe.truth({**best, "ru_cell_temp": t})["growth_rate"] for t in (1875.0, 1880.0, 1885.0)]
    assert max(rates) == pytest.approx(min(rates), rel=1e-9)
    # ... and follows the Sr flux one to one while Ru stays in excess
    ru_rich = {**best, "ru_cell_temp": 1889.0}
    cooler, hotter = (mbe.truth({**ru_rich, "sr_cell_temp": t})["growth_rate"] for t in (466.0, 472.0))
    assert hotter / cooler == pytest.approx(SR_CELL.bep(472.0) / SR_CELL.bep(466.0), rel=1e-9)
    assert hotter / cooler > 1.2  # ~3.6 %/K for Sr


def test_flux_noise_of_two_percent_reaches_the_film(mbe: SimulatedMbeSystem) -> None:
    best, best_rrr = mbe.optimum()
    chamber = Chamber(mbe.max_rate)
    for heater in HEATERS:
        chamber.ramp(heater, best[heater], mbe.max_rate[heater])
    chamber.set_ozone(best["ozone_flow"])
    chamber.advance(chamber.seconds_until_stable(0.01))
    films = [chamber.film(3600.0, mbe.window, mbe.rheed, np.random.default_rng(k))[0] for k in range(400)]
    rates = np.array([f.growth_rate_a_per_s for f in films])
    # growth is Sr-limited, so the rate carries the Sr flux noise one to one
    assert rates.std() / rates.mean() == pytest.approx(FLUX_NOISE, rel=0.15)
    assert rates.mean() == pytest.approx(float(mbe.truth(best)["growth_rate"]), rel=0.005)
    rrr = np.array([f.rrr for f in films if f.rrr is not None])
    assert len(rrr) == len(films)  # the optimum is far from any phase boundary
    assert 0.002 < rrr.std() / rrr.mean() < 0.05 and rrr.mean() < best_rrr


def test_grow_rejects_a_missing_beam() -> None:
    with pytest.raises(ValueError, match="fluxes must be > 0"):
        grow(SrRuO3Window(), 0.0, 1e13, 700.0, 5.0)


def test_no_ozone_at_all_is_an_under_oxidised_film() -> None:
    film = grow(SrRuO3Window(), 4e13, 5e13, 700.0, 0.0)
    assert not film.ok and "under-oxidised" in film.phase
    assert math.isfinite(film.growth_rate_a_per_s)
