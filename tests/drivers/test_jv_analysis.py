"""The J-V analysis on synthetic single-diode sweeps: known Voc, Jsc, FF and PCE recovered through noise,
and a shorted or dark cell is a failed sample with its reason, never an exception."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from closedloop.drivers.jv_analysis import ANALYSIS_NAME, ANALYSIS_VERSION, analyze_to_measurement
from closedloop.simulators.device.diode import DiodeParameters, jv_curve, max_power_density

AREA = 0.1
SETUP = {"area_cm2": AREA, "lamp_power_mW_cm2": 100.0, "compliance_A": 0.05}
CELL = DiodeParameters(jph=0.010, j0=2e-9, n=1.5, rs=4.0, rsh=1200.0)


def sweeps(cell: DiodeParameters, noise_A: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """A forward and a reverse sweep of `cell` as an SMU reads them (current into the cell, in A)."""
    rng = np.random.default_rng(seed)
    forward = np.round(np.arange(-0.2, 1.0 + 1e-9, 0.01), 4)
    artifacts: dict[str, Any] = {"jv_setup": SETUP}
    for direction, v in (("forward", forward), ("reverse", forward[::-1])):
        current = -jv_curve(v, cell) * AREA + rng.normal(0.0, noise_A, v.size)
        artifacts[f"voltage_{direction}_V"], artifacts[f"current_{direction}_A"] = v, np.clip(current, -0.05, 0.05)
    return artifacts


def truth(cell: DiodeParameters) -> dict[str, float]:
    v = np.linspace(0.0, 1.0, 100_001)
    j = jv_curve(v, cell)
    pmax = float(max_power_density(*(np.array([x]) for x in (cell.jph, cell.j0, cell.n, cell.rs, cell.rsh)))[0])
    voc = float(np.interp(0.0, -j, v))
    jsc = 1e3 * float(j[0])
    return {"voc": voc, "jsc": jsc, "pce": 100.0 * pmax / 0.1, "ff": 1e3 * pmax / (jsc * voc)}


@pytest.mark.parametrize("noise_A", [0.0, 2e-7])
def test_known_diode_figures_are_recovered(noise_A: float) -> None:
    m = analyze_to_measurement(sweeps(CELL, noise_A), instrument="smu-test", duration_s=12.0)
    expected = truth(CELL)
    assert m.status == "ok" and m.analysis == ANALYSIS_NAME and m.analysis_version == ANALYSIS_VERSION
    assert m.units == {"pce": "%", "voc": "V", "jsc": "mA/cm^2", "ff": ""}
    tolerance = 0.005 if noise_A == 0 else 0.02
    for name in ("voc", "jsc", "ff", "pce"):
        assert m.values[name] == pytest.approx(expected[name], rel=tolerance), name
    assert 0.55 < m.values["voc"] < 0.65 and 0.6 < m.values["ff"] < 0.75
    figures = m.artifacts["jv_figures"]
    assert figures["hysteresis_index"] == pytest.approx(0.0, abs=0.01)
    assert m.artifacts["voltage_reverse_V"][0] == pytest.approx(1.0)  # the raw sweep, in measured order


def test_a_shorted_cell_and_a_dark_cell_are_failed_samples_with_reasons() -> None:
    shorted = DiodeParameters(jph=0.010, j0=2e-9, n=1.5, rs=4.0, rsh=1.0)
    m = analyze_to_measurement(sweeps(shorted, 2e-7))
    assert m.status == "failed_sample" and not m.values
    assert "pinhole short" in m.detail and "Voc" in m.detail
    dark = DiodeParameters(jph=0.0, j0=2e-9, n=1.5, rs=4.0, rsh=1200.0)
    m = analyze_to_measurement(sweeps(dark, 2e-7))
    assert m.status == "failed_sample" and "no photocurrent" in m.detail
    # A photocurrent through a resistor only: J never reaches 0 within the sweep.
    never_crosses = sweeps(CELL)
    for direction in ("forward", "reverse"):
        never_crosses[f"current_{direction}_A"] = np.full(121, -1e-3)
    m = analyze_to_measurement(never_crosses)
    assert m.status == "failed_sample" and "no open-circuit crossing" in m.detail


def test_input_that_is_not_a_jv_measurement_raises_naming_the_problem() -> None:
    bad = sweeps(CELL)
    bad["current_forward_A"] = bad["current_forward_A"][:-3]
    with pytest.raises(ValueError, match="equal length"):
        analyze_to_measurement(bad)
    with pytest.raises(ValueError, match="missing"):
        analyze_to_measurement({"jv_setup": SETUP})
    clipped = sweeps(CELL)
    clipped["jv_setup"] = {**SETUP, "compliance_A": 5e-4}
    clipped["current_forward_A"] = np.clip(clipped["current_forward_A"], -5e-4, 5e-4)
    with pytest.raises(ValueError, match="compliance"):
        analyze_to_measurement(clipped)
