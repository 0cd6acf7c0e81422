"""The device model: its rank correlation with the TRMC film signal is the setting (0.8, and 0 for a
control), PCE is P3HT:PCBM-like, failures come at the set rate, and the registered ground truth (emulator
`smu`) finds the optimum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from closedloop.drivers.smu import SmuOptions
from closedloop.simulators.device.diode import DiodeParameters, jv_curve
from closedloop.simulators.device.model import DeviceModel, DeviceSettings
from closedloop.simulators.registry import emulator
from closedloop.simulators.trmc.process import SearchBox, example_protocol_constraint
from closedloop.simulators.truth import SearchRegion

# Independent of the calibration's Sobol sample: random legal points of the example protocol's space.
_rng = np.random.default_rng(7)
POINTS = [SearchBox().sample(_rng, [example_protocol_constraint]) for _ in range(250)]


@pytest.mark.parametrize(("target", "low", "high"), [(0.8, 0.75, 0.85), (0.0, -0.1, 0.1)])
def test_rank_correlation_with_the_film_signal_is_the_setting(target: float, low: float, high: float) -> None:
    model = DeviceModel(DeviceSettings(proxy_correlation=target))
    assert model.calibration.achieved == pytest.approx(target, abs=0.01)
    film = [model.true_film_signal(p) for p in POINTS]
    pce = model.pce_values(POINTS)
    assert low < spearmanr(film, pce).statistic < high
    # The batch path and the one-point path agree.
    assert model.true_pce(POINTS[0]) == pytest.approx(pce[0], rel=1e-3)


def test_pce_is_p3ht_pcbm_like_and_the_registered_truth_finds_an_optimum_above_random_recipes() -> None:
    model = DeviceModel()
    pce = model.pce_values(POINTS)
    assert 1.5 < float(np.median(pce)) < 3.5 and pce.min() > 0.1
    region = SearchRegion(
        ranges={"acceptor_fraction": (0.2, 0.8), "anneal_temp": (60.0, 200.0), "anneal_time": (1.0, 30.0),
                "spin_speed": (600.0, 4000.0)},
        steps={"spin_speed": 100}, choices={"solvent": ("o-dichlorobenzene",)}, constraints=(example_protocol_constraint,),
    )
    truth = emulator("smu").ground_truth(SmuOptions(), region, {"pce": "%"})  # what campaign benchmarks judge by
    conditions, best = dict(truth.optimum_conditions), truth.optimum_value
    assert truth.quantity == "pce" and truth.value(conditions) == pytest.approx(best)
    assert 4.0 < best < 5.5 and best >= pce.max() - 0.05
    assert conditions["solvent"] == "o-dichlorobenzene" and example_protocol_constraint(conditions) <= 1e-9
    cell = model.expected_cell(conditions)
    assert 0.55 < _voc(cell) < 0.65 and 9.0 < 1e3 * cell.jph < 11.5


def _voc(cell: DiodeParameters) -> float:
    v = np.linspace(0.0, 1.0, 1001)
    return float(v[np.argmax(jv_curve(v, cell) <= 0)])


def test_failures_come_at_the_device_rate_on_top_of_the_films() -> None:
    settings = DeviceSettings(failure_rate=0.2)
    model = DeviceModel(settings)
    good = {"acceptor_fraction": 0.5, "anneal_temp": 140.0, "anneal_time": 10.0, "spin_speed": 2000, "solvent": "chlorobenzene"}
    film_p = model.film.failure_probability(good)
    assert model.failure_probability(good) == pytest.approx(1 - (1 - film_p) * 0.8)
    rng = np.random.default_rng(0)
    measured = [model.measure_pce(good, rng) for _ in range(400)]
    failed = sum(m is None for m in measured) / len(measured)
    assert failed == pytest.approx(model.failure_probability(good), abs=0.05)
    values = np.array([m for m in measured if m is not None])
    assert float(np.mean(values)) == pytest.approx(model.true_pce(good), rel=0.05)
    assert 0.02 < float(np.std(values) / np.mean(values)) < 0.2  # device-to-device scatter
    with pytest.raises(ValueError, match="proxy_correlation"):
        DeviceSettings(proxy_correlation=1.5)
