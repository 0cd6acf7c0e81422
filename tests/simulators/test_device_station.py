"""`sim:smu`: the device model's cells measured without a wire, its settings taken from the protocol's
options, its raw sweeps reanalyzable by the real J-V analysis."""

from __future__ import annotations

import pytest

from closedloop.controller.engine.clock import VirtualClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext
from closedloop.drivers.jv_analysis import analyze_to_measurement
from closedloop.simulators.registry import SimulatedSmuOptions, SimulationInputs, simulated

GOOD = {"acceptor_fraction": 0.5, "anneal_temp": 140.0, "anneal_time": 10.0, "spin_speed": 2000, "solvent": "chlorobenzene"}


def test_sim_smu_measures_what_the_analysis_finds_in_its_raw_sweeps() -> None:
    entry = simulated("smu")
    options = SimulatedSmuOptions.model_validate({"proxy_correlation": 0.0, "failure_rate": 0.0, "light_soak": "2 min"})
    station = entry.build(4, options, SimulationInputs())
    assert station.model.settings.proxy_correlation == 0.0  # type: ignore[attr-defined]
    clock = VirtualClock()
    m = station.run(GOOD, InstrumentContext(clock=clock, trial_id=3))
    assert m.status == "ok" and set(m.values) == {"pce", "voc", "jsc", "ff"}
    assert clock.now() == pytest.approx(m.duration_s) and 180.0 < m.duration_s < 300.0
    reanalyzed = analyze_to_measurement(m.artifacts)
    for name in ("voc", "jsc", "ff"):
        assert reanalyzed.values[name] == pytest.approx(m.values[name], rel=0.03), name
    assert entry.truth is not None and entry.ground_truth is not None
    truth = entry.truth(4, options)(GOOD)
    assert truth["pce"] == pytest.approx(m.values["pce"], rel=0.25) and 0 < truth["failure_probability"] < 0.2
    with pytest.raises(EnvelopeViolation, match="compliance"):
        station.run({**GOOD, "compliance": 1.0}, InstrumentContext(clock=clock, trial_id=4))
    with pytest.raises(ValueError, match="sim:smu makes its own devices"):
        entry.build(0, SimulatedSmuOptions(sample_from="line"), SimulationInputs())
