"""SimulatedMbeSystem as a driver: refusal before any command, rate limits and envelope over a campaign,
reproducibility, failed growths, interlock faults and the safe state."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, InstrumentFault, Measurement
from closedloop.drivers.mbe import MBE_DESCRIPTION, MBE_ENVELOPE
from closedloop.simulators.mbe import EXAMPLE_FIXED, SimulatedMbeSystem
from closedloop.simulators.mbe.chamber import IDLE_CELSIUS, RU_CELL, SR_CELL
from closedloop.simulators.mbe.station import HEATERS

BEST = {**EXAMPLE_FIXED, "ru_cell_temp": 1877.0, "substrate_temp": 760.0, "ozone_flow": 6.0}


class Journal:
    """Collects what the driver journals, as the store would."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, direction: str, text: str) -> None:
        self.lines.append((direction, text))

    @property
    def sent(self) -> list[str]:
        return [text for direction, text in self.lines if direction == "tx"]


def context(trial_id: int, start: float = 0.0, journal: Journal | None = None) -> InstrumentContext:
    return InstrumentContext(clock=StationClock(start), trial_id=trial_id, journal=journal or Journal())


def random_legal_conditions(rng: np.random.Generator) -> dict[str, float]:
    conditions = {}
    for name, limit in MBE_ENVELOPE.limits.items():
        assert limit.min is not None and limit.max is not None
        conditions[name] = float(rng.uniform(limit.min, limit.max))
    return conditions


def assert_same(a: Measurement, b: Measurement) -> None:
    assert a.values == b.values and a.status == b.status and a.detail == b.detail
    assert a.duration_s == b.duration_s
    assert a.artifacts.keys() == b.artifacts.keys()
    for key, value in a.artifacts.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b.artifacts[key])
        else:
            assert value == b.artifacts[key]


# --- refusal ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"ru_cell_temp": 2050.0}, "ru_cell_temp=2050.0: above the maximum 2000.0 degC"),
        ({"ozone_flow": -1.0}, "ozone_flow=-1.0: below the minimum"),
        ({"sr_cell_temp": float("nan")}, "not a finite number"),
        ({"shutter_override": 1.0}, "declares no such setting"),
    ],
)
def test_out_of_envelope_is_refused_before_any_command(bad: dict[str, float], message: str) -> None:
    mbe = SimulatedMbeSystem(seed=0)
    journal = Journal()
    with pytest.raises(EnvelopeViolation, match=message):
        mbe.run({**BEST, **bad}, context(1, journal=journal))
    assert journal.lines == [] and mbe.history == []
    with pytest.raises(EnvelopeViolation):
        mbe.check({**BEST, **bad})


def test_a_recipe_missing_a_setting_is_refused_with_what_to_do() -> None:
    mbe = SimulatedMbeSystem(seed=0)
    conditions = {k: v for k, v in BEST.items() if k != "sr_cell_temp"}
    with pytest.raises(EnvelopeViolation, match="sr_cell_temp.*type: fixed"):
        mbe.run(conditions, context(1))
    assert mbe.history == []


# --- a campaign of random legal trials ---------------------------------------------------------------


def test_thirty_random_trials_stay_inside_the_envelope_and_its_ramp_rates() -> None:
    mbe = SimulatedMbeSystem(seed=5)
    rng = np.random.default_rng(42)
    clock_start = 0.0
    statuses = set()
    for trial_id in range(1, 31):
        conditions = random_legal_conditions(rng)
        if trial_id % 3 == 0:
            conditions = {**BEST, "growth_time": conditions["growth_time"]}
        measurement = mbe.run(conditions, context(trial_id, start=clock_start))
        statuses.add(measurement.status)
        clock_start += measurement.duration_s + float(rng.uniform(0.0, 4 * 3600.0))
        assert ("rrr" in measurement.values) == (measurement.status == "ok")
    assert statuses == {"ok", "failed_sample"}

    times = [e.t_s for e in mbe.history]
    assert times == sorted(times)
    ramps = [e for e in mbe.history if e.action == "ramp"]
    assert len(ramps) >= 30 * 6
    for ramp in ramps:
        limit = MBE_ENVELOPE.limits[ramp.device]
        assert limit.min <= ramp.value <= limit.max, ramp
        assert ramp.rate_per_min <= limit.max_rate, ramp
        assert ramp.end_s - ramp.t_s == pytest.approx(abs(ramp.value - ramp.start) / ramp.rate_per_min * 60.0)
    for event in mbe.history:
        if event.device == "ozone_flow":
            assert (
                MBE_ENVELOPE.limits["ozone_flow"].min <= event.value <= MBE_ENVELOPE.limits["ozone_flow"].max
            )


def test_each_trial_ramps_from_where_the_chamber_was() -> None:
    mbe = SimulatedMbeSystem(seed=1, ex_situ_s=0.0)
    first = mbe.run(BEST, context(1, start=0.0))
    # straight after the first trial (the film went out once the substrate had cooled): the Ru cell,
    # at 10 degC/min from 1877 to 1200, has not reached idle yet
    mbe.run({**BEST, "ru_cell_temp": 1850.0}, context(2, start=first.duration_s))
    ru_ramps = [e for e in mbe.history if e.device == "ru_cell_temp" and e.action == "ramp"]
    assert ru_ramps[0].start == IDLE_CELSIUS["ru_cell_temp"]
    assert IDLE_CELSIUS["ru_cell_temp"] < ru_ramps[2].start < 1877.0
    # a day later the chamber has idled: the next ramp starts from idle
    later = first.duration_s * 2 + 24 * 3600.0
    mbe.run(BEST, context(3, start=later))
    assert [e for e in mbe.history if e.device == "ru_cell_temp"][4].start == pytest.approx(
        IDLE_CELSIUS["ru_cell_temp"]
    )


# --- one trial in detail ----------------------------------------------------------------------------


def test_a_good_growth_journals_the_recipe_and_returns_the_contract() -> None:
    mbe = SimulatedMbeSystem(seed=2, name="mbe-a")
    journal = Journal()
    ctx = context(7, start=1000.0, journal=journal)
    measurement = mbe.run({k: v for k, v in BEST.items() if k != "growth_time"}, ctx)

    assert measurement.status == "ok" and measurement.detail == ""
    assert set(measurement.values) == {"rrr", "xrd_fwhm", "growth_rate"}
    assert measurement.units == {q: MBE_DESCRIPTION.measures[q] for q in measurement.values}
    assert 60.0 < measurement.values["rrr"] < 90.0
    assert measurement.analysis == "mbe-sim-truth" and measurement.instrument == "mbe-a"
    assert measurement.duration_s == pytest.approx(ctx.clock.now() - 1000.0)
    sent = journal.sent
    for command in (
        "RU_CELL RATE 10.0",
        "RU_CELL SP 1877.0",
        "SR_CELL SP 470.0",
        "SUBSTRATE SP 760.0",
        "BFM IN",
        "BFM OUT",
        "OZONE FLOW 6.00",
        "SHUTTER SR OPEN",
        "SHUTTER RU CLOSE",
        "OZONE FLOW 0.00",
    ):
        assert command in sent, command
    assert sent.index("BFM OUT") < sent.index("OZONE FLOW 6.00") < sent.index("RHEED START")
    # the shutters stay open for the default 60 minutes
    opened = [e.t_s for e in mbe.history if e.device == "shutter_sr" and e.action == "open"][-1]
    closed = [e.t_s for e in mbe.history if e.device == "shutter_sr" and e.action == "close"][-1]
    assert closed - opened == pytest.approx(3600.0)
    artifacts = measurement.artifacts
    assert artifacts["rheed_t_s"].shape == artifacts["rheed_intensity"].shape
    assert artifacts["temp_t_s"][-1] - artifacts["temp_t_s"][0] <= measurement.duration_s
    aging = mbe.chamber.aging  # the gauge sees the true beam: drifted thermocouple, depleted charge
    for source, cell, heater in (("sr", SR_CELL, "sr_cell_temp"), ("ru", RU_CELL, "ru_cell_temp")):
        true_bep = cell.bep(BEST[heater] - aging.tc_offset_k[heater], aging.depletion[heater])
        assert artifacts["beam_flux"][f"{source}_bep_torr"] == pytest.approx(true_bep, rel=0.1)
    assert any(e["action"] == "ramp" for e in artifacts["chamber_events"])


def test_a_wrong_phase_growth_is_a_failed_sample_without_rrr() -> None:
    mbe = SimulatedMbeSystem(seed=3)
    cold = {**BEST, "substrate_temp": 450.0}
    measurement = mbe.run(cold, context(1))
    assert measurement.status == "failed_sample"
    assert measurement.detail.startswith("wrong phase: substrate too cold")
    assert "rrr" not in measurement.values and "xrd_fwhm" not in measurement.values
    assert measurement.values["growth_rate"] > 0
    assert measurement.artifacts["rheed_intensity"].std() < 0.1  # no oscillations worth the name


def test_same_seed_and_trial_id_give_the_same_measurement() -> None:
    conditions = [BEST, {**BEST, "ru_cell_temp": 1840.0, "substrate_temp": 700.0}]
    runs = []
    for _ in range(2):
        mbe = SimulatedMbeSystem(seed=9)
        runs.append([mbe.run(c, context(i + 1, start=i * 1e5)) for i, c in enumerate(conditions)])
    for a, b in zip(*runs, strict=True):
        assert_same(a, b)
    # the film does not depend on what ran before (only the durations do)
    alone = SimulatedMbeSystem(seed=9).run(conditions[1], context(2))
    assert alone.values == runs[0][1].values
    other_seed = SimulatedMbeSystem(seed=10).run(conditions[0], context(1))
    assert other_seed.values != runs[0][0].values


# --- faults and the safe state -----------------------------------------------------------------------


def test_a_pressure_burst_trips_the_interlock_before_anything_heats() -> None:
    mbe = SimulatedMbeSystem(seed=0, fault_rate=1.0)
    journal = Journal()
    with pytest.raises(InstrumentFault, match="interlock refused.*above the interlock limit"):
        mbe.run(BEST, context(1, journal=journal))
    assert journal.sent[0] == "GAUGE P?"
    assert not any(" SP " in text for text in journal.sent)
    assert not any(e.action == "ramp" and e.value > IDLE_CELSIUS[e.device] for e in mbe.history)
    assert any(e.device == "interlock" and e.action == "trip" for e in mbe.history)
    # the burst passes: the same system grows normally once the fault is gone
    mbe.fault_rate = 0.0
    assert mbe.run(BEST, context(2)).status == "ok"


def test_safe_state_closes_shutters_stops_ozone_and_ramps_to_idle_within_limits() -> None:
    mbe = SimulatedMbeSystem(seed=0)
    chamber = mbe.chamber
    # mid-growth, as if the engine aborted: hot cells, ozone on, shutters open
    for heater in HEATERS:
        chamber.ramp(heater, BEST[heater], mbe.max_rate[heater])
    chamber.advance(3 * 3600.0)
    chamber.set_ozone(6.0)
    chamber.open_shutter("sr")
    chamber.open_shutter("ru")
    chamber.move_gauge(True)
    before = len(mbe.history)

    mbe.safe_state()
    events = mbe.history[before:]
    assert not any(s.is_open for s in chamber.shutters.values())
    assert chamber.ozone_sccm == 0.0 and not chamber.gauge.inserted
    ramps = {e.device: e for e in events if e.action == "ramp"}
    assert set(ramps) == set(HEATERS)
    for device, ramp in ramps.items():
        assert ramp.value == IDLE_CELSIUS[device]
        assert ramp.rate_per_min <= MBE_ENVELOPE.limits[device].max_rate
    assert [e.device for e in events[:2]] == ["shutter_sr", "shutter_ru"]  # shutters first
    chamber.advance(6 * 3600.0)
    assert all(abs(chamber.reading(h) - IDLE_CELSIUS[h]) < 0.5 for h in HEATERS)


def test_safe_state_never_raises_even_when_the_chamber_is_broken() -> None:
    mbe = SimulatedMbeSystem(seed=0)
    del mbe.chamber.controllers["ru_cell_temp"]  # a controller that stopped answering
    mbe.safe_state()
    mbe.close()
    assert mbe.recover(1, context(1)) is None
