"""The schedule of a campaign from its journal: spans of a three-step line with two hot plates (every
outcome a step can have), utilization, bottleneck and films per day against hand-computed numbers; the
one-span-per-trial schedule of real one-instrument campaigns; the Gantt and utilization table in the
HTML report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.report.html import build_report
from closedloop.controller.report.schedule import (
    ExpiredWait,
    StepSpan,
    expired_waits,
    schedule_of,
    spans_from_events,
    summarize,
)
from closedloop.controller.report.schedule.summary import busy_intervals, idle_gaps
from closedloop.controller.report.schedule.text import expired_warning, station_line, summary_lines

COAT, ANNEAL, MEASURE = ("coat", 0), ("anneal", 1), ("measure", 2)

# (virtual time [s], trial, step, station, phase, extra data), in the order the engine would journal them.
# Trial 1, 2, 5 go through the whole line; 3 is a failed film; 4's hot plate faults; 5's anneal is repeated
# after a crash; 6's coating is lost in a crash; 7 waits past max_wait for a hot plate; 8 is still annealing.
LINE: list[tuple[float, int, tuple[str, int], str, str, dict[str, Any]]] = [
    (0, 1, COAT, "robot", "started", {}),
    (100, 1, COAT, "robot", "done", {"values": {"thickness": 95.0}, "units": {"thickness": "nm"}}),
    (100, 1, ANNEAL, "hotplate-1", "started", {}),
    (100, 2, COAT, "robot", "started", {}),
    (200, 2, COAT, "robot", "done", {}),
    (200, 2, ANNEAL, "hotplate-2", "started", {}),
    (200, 3, COAT, "robot", "started", {}),
    (300, 3, COAT, "robot", "failed", {"reason": "film dewetted"}),
    (300, 4, COAT, "robot", "started", {}),
    (400, 4, COAT, "robot", "done", {}),
    (400, 5, COAT, "robot", "started", {}),
    (500, 5, COAT, "robot", "done", {}),
    (500, 6, COAT, "robot", "started", {}),
    (550, 6, COAT, "robot", "lost", {}),
    (600, 7, COAT, "robot", "started", {}),
    (700, 1, ANNEAL, "hotplate-1", "done", {}),
    (700, 1, MEASURE, "trmc", "started", {}),
    (700, 4, ANNEAL, "hotplate-1", "started", {}),
    (700, 7, COAT, "robot", "done", {}),
    (800, 2, ANNEAL, "hotplate-2", "done", {}),
    (800, 5, ANNEAL, "hotplate-2", "started", {}),
    (900, 1, MEASURE, "trmc", "done", {"values": {"phi_mu": 0.01}, "units": {"phi_mu": "cm2/Vs"}}),
    (900, 2, MEASURE, "trmc", "started", {}),
    (1000, 4, ANNEAL, "hotplate-1", "fault", {"reason": "hot plate over-temperature trip"}),
    (1000, 5, ANNEAL, "hotplate-2", "repeat", {}),
    (1000, 5, ANNEAL, "hotplate-2", "started", {}),
    (1000, 8, COAT, "robot", "started", {}),
    (1100, 2, MEASURE, "trmc", "done", {}),
    (1100, 8, COAT, "robot", "done", {}),
    (1100, 8, ANNEAL, "hotplate-1", "started", {}),
    (1300, 7, ANNEAL, "", "expired", {"waited_s": 600.0, "max_wait_s": 600.0}),
    (1600, 5, ANNEAL, "hotplate-2", "done", {}),
    (1600, 5, MEASURE, "trmc", "started", {}),
    (1800, 5, MEASURE, "trmc", "done", {}),
]


def line_campaign(protocol: Path, db: Path) -> Path:
    """A real campaign file whose journal holds LINE's step events (eight samples, added as trials)."""
    with Campaign.create(protocol, db, sim=True) as campaign:
        store = campaign.store
        for i in range(8):
            store.add_trial({"x1": float(i), "x2": 1.0}, proposer="operator", origin="manual")
        for t, trial, (step, index), station, phase, extra in LINE:
            store.record_event("step", trial_id=trial, virtual_t=t,
                               data={"step": step, "index": index, "station": station, "phase": phase, **extra})
    return db


@pytest.fixture
def line(branin_protocol: Callable[..., Path], tmp_path: Path) -> Path:
    return line_campaign(branin_protocol(), tmp_path / "line.sqlite")


def read(db: Path) -> tuple[list[dict], list[Any]]:
    with Campaign.open(db) as campaign:
        return campaign.store.events(), campaign.store.trials()


def test_the_spans_of_a_line_follow_each_sample_through_every_step(line: Path) -> None:
    events, trials = read(line)
    spans = spans_from_events(events, trials)
    by_trial = {}
    for s in spans:
        by_trial.setdefault(s.trial, []).append((s.step, s.station, s.start, s.end, s.outcome))
    assert by_trial[1] == [("coat", "robot", 0, 100, "done"), ("anneal", "hotplate-1", 100, 700, "done"),
                           ("measure", "trmc", 700, 900, "done")]
    assert by_trial[3] == [("coat", "robot", 200, 300, "failed")]
    assert by_trial[4][1] == ("anneal", "hotplate-1", 700, 1000, "fault")
    assert by_trial[5][1:3] == [("anneal", "hotplate-2", 800, 1000, "repeat"), ("anneal", "hotplate-2", 1000, 1600, "done")]
    assert by_trial[6] == [("coat", "robot", 500, 550, "lost")]
    assert by_trial[7] == [("coat", "robot", 600, 700, "done")]  # expired: no anneal span
    # Still on its hot plate: drawn up to the journal's last entry.
    assert by_trial[8][1] == ("anneal", "hotplate-1", 1100, 1800, "running")
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert expired_waits(events) == [ExpiredWait(7, "anneal", 1, 1300.0, 600.0, 600.0)]


def test_utilization_bottleneck_and_films_per_day_of_the_line(line: Path) -> None:
    spans, schedule = schedule_of(*read(line))
    assert schedule is not None
    assert (schedule.start, schedule.end, schedule.horizon_s) == (0, 1800, 1800)
    use = {u.station: u for u in schedule.stations}
    # Busy time by hand: robot 0-550, 600-700, 1000-1100; hotplate-1 100-1000, 1100-1800;
    # hotplate-2 200-1600 (a repeated anneal holds the plate too); trmc 700-1100, 1600-1800.
    assert {k: u.busy_s for k, u in use.items()} == {"robot": 750, "hotplate-1": 1600, "hotplate-2": 1400, "trmc": 600}
    assert use["hotplate-1"].utilization == pytest.approx(1600 / 1800)
    assert [(g.start, g.end) for g in use["robot"].gaps] == [(550, 600), (700, 1000), (1100, 1800)]
    assert use["trmc"].longest_gap_s == 700  # waiting for the first film: 0-700
    assert [u.station for u in schedule.stations] == ["robot", "hotplate-1", "hotplate-2", "trmc"]
    steps = {s.step: s for s in schedule.steps}
    assert steps["anneal"].stations == ("hotplate-1", "hotplate-2")
    assert steps["anneal"].utilization == pytest.approx((1600 + 1400) / 2 / 1800)
    assert steps["coat"].utilization == pytest.approx(750 / 1800)
    assert steps["measure"].utilization == pytest.approx(600 / 1800)
    assert schedule.bottleneck.step == "anneal"
    # Steady state: anneal takes 600 s (its three complete spans) on 2 plates, 288 a day; coat 100 s on one
    # robot, 864; measure 200 s on one TRMC, 432. The line passes 288.
    assert steps["anneal"].mean_duration_s == 600 and steps["anneal"].per_day == pytest.approx(288)
    assert steps["coat"].per_day == pytest.approx(864) and steps["measure"].per_day == pytest.approx(432)
    assert schedule.limiting_step == steps["anneal"] and schedule.predicted_per_day == pytest.approx(288)
    # Results: trials 1, 2, 5 through the line and the failed film of trial 3, in 1800 s.
    assert schedule.completed == 4 and schedule.completed_per_day == pytest.approx(4 * 86400 / 1800)
    assert (len(schedule.expired), schedule.lost, schedule.faults, schedule.repeats, schedule.running) == (1, 1, 1, 1, 1)


def test_a_started_step_started_again_without_an_end_was_interrupted() -> None:
    def step(t: float, phase: str) -> dict[str, Any]:
        return {"kind": "step", "trial_id": 1, "t": 5e9, "virtual_t": t, "from_state": None, "to_state": None,
                "detail": "", "data": {"step": "coat", "index": 0, "station": "robot", "phase": phase}}

    spans = spans_from_events([step(0, "started"), step(40, "started"), step(140, "done")], [])
    assert [(s.start, s.end, s.outcome) for s in spans] == [(0, 40, "repeat"), (40, 140, "done")]


def test_busy_time_counts_overlapping_spans_once_and_idle_gaps_fill_the_rest() -> None:
    spans = [StepSpan(1, "anneal", 1, "hp", 10, 50, "done"), StepSpan(2, "anneal", 1, "hp", 40, 60, "done"),
             StepSpan(3, "anneal", 1, "hp", 80, 90, "done")]
    busy = busy_intervals(spans)
    assert busy == [(10, 60), (80, 90)]
    assert [(g.start, g.end) for g in idle_gaps("hp", busy, 0, 100)] == [(0, 10), (60, 80), (90, 100)]
    assert summarize([]) is None


# ---- one instrument: the state events --------------------------------------------------------------------


def test_a_campaign_without_step_events_has_one_span_per_trial_from_its_states(
    branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    protocol = branin_protocol(trials=8, options="noise_sd: 0.01, stations: 2, fault_rate: 0.35")
    with Campaign.create(protocol, tmp_path / "one.sqlite", sim=True) as campaign:
        campaign.run(sim=True)
        events, trials = campaign.store.events(), campaign.store.trials()
    spans, schedule = schedule_of(events, trials)
    ran = [t for t in trials if any(e["to_state"] == "running" for e in events if e["trial_id"] == t.id)]
    assert [s.trial for s in sorted(spans, key=lambda s: s.trial)] == [t.id for t in ran]
    outcome = {"measured": "done", "failed": "failed", "abandoned": "fault"}
    for s in spans:
        trial = next(t for t in trials if t.id == s.trial)
        own = {e["to_state"]: e["virtual_t"] for e in events if e["trial_id"] == s.trial and e["kind"] == "state"}
        assert (s.step, s.index, s.station) == ("measure", 0, trial.instrument)
        assert (s.start, s.end, s.outcome) == (own["running"], own[trial.state], outcome[trial.state])
    assert {s.outcome for s in spans} >= {"done", "fault"}  # the injected faults end as abandoned trials
    assert schedule is not None and [u.station for u in schedule.stations] == ["branin-1", "branin-2"]
    for u in schedule.stations:
        own_spans = [s for s in spans if s.station == u.station]
        assert u.busy_s == pytest.approx(sum(s.duration_s for s in own_spans))
        assert u.utilization == pytest.approx(u.busy_s / schedule.horizon_s)
    assert schedule.completed == sum(t.state in ("measured", "failed") for t in trials)


# ---- the report -------------------------------------------------------------------------------------------


def test_the_report_shows_the_gantt_and_the_utilization_table(line: Path) -> None:
    html = build_report(line)
    assert 'data-plot="schedule-gantt"' in html
    section = html[html.index("<h2>Schedule</h2>"):]
    section = section[: section.index("</section>")]
    for row in ("<td>anneal</td><td>hotplate-1</td><td class=\"num\">3</td>",
                "<td>coat</td><td>robot</td><td class=\"num\">8</td>"):
        assert row in section
    assert "88.9%" in section and "77.8%" in section and "41.7%" in section and "33.3%" in section
    assert "bottleneck: anneal (83.3% busy" in section
    assert "288 films per day at steady state" in section
    assert "1 sample(s) waited past a step" in section


def test_a_campaign_that_never_ran_has_no_schedule_section(branin_protocol: Callable[..., Path], tmp_path: Path) -> None:
    db = tmp_path / "idle.sqlite"
    Campaign.create(branin_protocol(), db, sim=True).close()
    assert "<h2>Schedule</h2>" not in build_report(db) and "schedule-gantt" not in build_report(db)


def test_the_schedule_in_words_names_the_bottleneck_rate_and_what_went_wrong(line: Path) -> None:
    _, schedule = schedule_of(*read(line))
    assert schedule is not None
    assert [station_line(u) for u in schedule.stations][1] == "anneal · hotplate-1: 88.9% busy (3 spans, longest idle 2 min)"
    assert summary_lines(schedule) == [
        "bottleneck: anneal (83.3% busy, mean of 2 stations)",
        "predicted: 288 films per day at steady state (anneal: 2 stations, 10 min a sample)",
        "finished: 4 sample(s) with a result in 30 min (192 a day)",
        "incidents: 1 sample(s) expired waiting for a station, 1 step(s) lost in a crash, 1 step(s) ended by an "
        "instrument fault, 1 step(s) repeated after a crash, 1 step(s) still running",
    ]
    assert expired_warning(schedule) == ("1 sample(s) waited longer than max_wait for a free station (anneal) and "
                                         "never ran that step: add stations there, raise max_wait, or start fewer "
                                         "samples at once")
