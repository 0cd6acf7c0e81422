"""`closedloop validate --dry-run`: whole campaigns through the real engine and driver against the
simulators (in process, and an emulator on a real pty), with the verdict, times, transcript, margins,
approvals and warnings read back from the scratch campaign file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.dryrun import fold_transcript, format_report
from closedloop.controller.cli.main import main
from closedloop.controller.dryrun.checks import initial_coverage, ramp_seconds, setpoint_margins
from closedloop.controller.dryrun.run import dry_run
from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, Limit
from closedloop.drivers.mbe_driver import MbeDriver
from closedloop.planners.space import FloatParameter, Objective, Problem, SearchSpace
from closedloop.simulators.registry import in_process_port
from tests import paths
from tests.emulated import emulator_process

ROOT = paths.ROOT
# A protocol measured by hand has nothing to simulate (tests/controller/cli/test_manual.py says so).
EXAMPLES = sorted(p for p in (ROOT / "protocols").glob("*.yaml") if p.name != "manual_spin_coating.yaml")
RAMP_TOO_FAST = ROOT / "tests" / "data" / "mbe_ramp_too_fast.yaml"


def closedloop(*args: str, cwd: Path = ROOT, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "closedloop", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def edited_copy(source: Path, folder: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of an example protocol with some of its lines changed (each replacement must apply)."""
    text = source.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = folder / source.name
    path.write_text(text)
    return path


def small_mbe(folder: Path, *extra: tuple[str, str], trials: int = 4, initial: int = 3) -> Path:
    return edited_copy(
        ROOT / "protocols" / "mbe_srruo3.yaml", folder,
        ("budget: {trials: 35, wall_time: 45 day}", f"budget: {{trials: {trials}}}"),
        ("initial: {method: sobol, n: 6}", f"initial: {{method: sobol, n: {initial}}}"),
        *extra,
    )


# -- every example protocol -------------------------------------------------------------------------


# Examples dry-run on a shorter budget than they ship with: the same engine, gate and driver path, in a
# fraction of the suite's time (file name -> the budget line, and the line used here).
SHORTER = {
    # `make demo` runs this campaign in full with --sim; its 40 trials were the suite's longest test (20: the
    # second longest). 14: its 8 initial points and six model fits, the planner's whole path.
    "trmc_opv_blend.yaml": ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 14, wall_time: 12 h}"),
    # The furnace over its in-process emulator: each trial is the same command path.
    "serial_furnace.yaml": ("budget: {trials: 30, wall_time: 3 day}", "budget: {trials: 15, wall_time: 3 day}"),
    # trmc_opv_blend's space, instrument and envelope; here its two-objective planning (40 trials: +1 min).
    "trmc_opv_pareto.yaml": ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 14, wall_time: 12 h}"),
    # The line's steps and schedule, on a budget of a few model fits (the whole campaign: 1.5 min).
    "opv_line.yaml": ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 11, wall_time: 12 h}"),
    # Its sources and routes, on 110 h of its 200 h (the films and the first devices; a few model fits).
    "opv_device_mf.yaml": ("instrument_time: 200 h", "instrument_time: 110 h"),
}


@pytest.mark.slow
@pytest.mark.timeout(900)  # the TRMC example fits ~30 models: minutes on a loaded 2-core box
@pytest.mark.parametrize("protocol", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_protocol_would_run_safely(protocol: Path, tmp_path: Path) -> None:
    if protocol.name in SHORTER:
        protocol = edited_copy(protocol, tmp_path, SHORTER[protocol.name])
    report = dry_run(protocol)
    assert report.problems == [], format_report(report)
    assert report.exit_code == 0
    assert not report.stop_reason.startswith(("paused", "stopped", "dry run halted")), report.stop_reason
    results = report.states.get("measured", 0) + report.states.get("failed", 0)
    assert results == sum(report.states.values())  # nothing refused, abandoned or left in flight
    assert report.instrument_time_s > 0 and report.wall_time_estimate_s > report.campaign_time_s
    assert report.transcript and report.transcript[0]["t_s"] == 0.0
    assert report.transcript_trial == report.trials[0]["trial"]
    # Every numeric setting the instrument declares and the protocol sends has a margin inside its range.
    sent = {m.parameter for m in report.margins}
    assert sent and all(m.margin is None or 0 <= m.margin <= 0.5 for m in report.margins)
    assert sent <= set(report.trials[0]["conditions"])


@pytest.mark.slow
def test_the_mbe_example_reports_ramps_approvals_and_the_growth_commands(tmp_path: Path) -> None:
    # The example's approval region and ramping, on a 4-growth copy (one model fit).
    report = dry_run(small_mbe(tmp_path), scratch_dir=tmp_path / "scratch")
    assert report.exit_code == 0, format_report(report)
    assert report.campaign_file is not None and Path(report.campaign_file).exists()
    region = {"substrate_temp": (650, 820), "ru_cell_temp": (1840, 1885)}
    outside = [t["trial"] for t in report.trials
               if any(not lo <= t["conditions"][k] <= hi for k, (lo, hi) in region.items())]
    assert [a["trial"] for a in report.approvals] == outside
    assert all(a["why"].startswith("outside the trusted region") for a in report.approvals)
    # The Ru cell climbs ~650 degC from idle at 10 degC/min: an hour of ramping per growth, not a majority.
    assert 4 * 3000 < report.ramp_time_s < 0.5 * report.instrument_time_s
    sent = [x["text"] for x in report.transcript if x["direction"] == "tx"]
    assert sent.index("RU_CELL:RATE 10.0") < next(i for i, s in enumerate(sent) if s.startswith("RU_CELL:SP "))
    assert "SHUT:MAIN OPEN" in sent and sent[-1] == "GROW:MEAS?"
    growth = next(x["t_s"] for x in report.transcript if x["text"] == "SHUT:MAIN OPEN")
    closed = max(x["t_s"] for x in report.transcript if x["text"] == "SHUT:MAIN CLOS")
    assert closed - growth == pytest.approx(60 * 60, abs=60)  # growth_time: 60 min
    text = format_report(report)
    assert f"approvals the protocol would ask for: {len(outside)}" in text and "SAFE" in text


@pytest.mark.slow
def test_a_protocol_for_the_real_instrument_dry_runs_against_its_simulator(tmp_path: Path) -> None:
    # The file a lab runs live names the growth controller's serial bridge; the dry run never touches it.
    protocol = small_mbe(tmp_path, ("connection: sim://mbe", "connection: socket://mbe-ctl.invalid:4001"))
    report = dry_run(protocol)
    assert report.exit_code == 0, format_report(report)
    assert report.instrument == "in-process simulator (sim://mbe)"
    assert sum(report.states.values()) == 4 and set(report.states) <= {"measured", "failed"}
    assert report.transcript[1] == {"t_s": 0.0, "direction": "rx", "text": report.transcript[1]["text"]}
    assert float(report.transcript[1]["text"]) > 0  # the simulated Sr cell answered its PV? query


# -- the failing case: a legal space whose recipe would break a ramp limit over time ----------------


@pytest.mark.slow
def test_a_recipe_too_short_for_the_ramp_limit_passes_validation_but_fails_the_dry_run() -> None:
    assert CliRunner().invoke(main, ["validate", str(RAMP_TOO_FAST)]).exit_code == 0  # bounds inside the envelope
    done = closedloop("validate", "--dry-run", "--json", str(RAMP_TOO_FAST))
    assert done.returncode == 1, done.stdout + done.stderr
    [result] = json.loads(done.stdout)
    report = result["dry_run"]
    assert result["valid"] and not report["safe"]
    first = report["problems"][0]
    assert first["kind"] == "instrument refusal" and first["trial"] == 1
    target = report["trials"][0]["conditions"]["ru_cell_temp"]
    assert first["command"] == f"RU_CELL:SP {target!r}"
    assert "stabilize_timeout_s" in first["message"] and "max_rate 10" in first["message"]
    # Refused before any setpoint: the driver only read the loops, then journaled the refusal.
    sent = [x["text"] for x in report["transcript"] if x["direction"] == "tx"]
    assert sent[-1].startswith(f"REFUSED RU_CELL:SP {target!r}")
    assert all(s.endswith("?") for s in sent[:-1])


def test_the_ramp_failure_reads_with_its_trial_and_command() -> None:
    report = dry_run(RAMP_TOO_FAST)
    text = format_report(report)
    assert "PROBLEMS (exit 1)" in text
    assert "instrument refusal (trial 1, command RU_CELL:SP " in text
    # The engine pauses by itself: a live run would not go on proposing recipes the driver refuses.
    assert report.stop_reason.startswith("paused: 3 trials in a row refused by the instrument's envelope")
    assert "fix the protocol's ranges or instrument options" in report.stop_reason


def test_a_step_the_safety_gate_refuses_at_dispatch_fails_the_dry_run(tmp_path: Path) -> None:
    protocol = edited_copy(
        ROOT / "protocols" / "serial_furnace.yaml", tmp_path,
        ("anneal_temp: {min: 20, max: 450, unit: degC, max_step: 300}",
         "anneal_temp: {min: 20, max: 450, unit: degC, max_step: 40}"),
        ("budget: {trials: 30, wall_time: 3 day}", "budget: {trials: 8}"),
    )
    report = dry_run(protocol)
    assert report.exit_code == 1
    refusal = next(p for p in report.problems if p.kind == "safety gate refusal")
    trial = next(t for t in report.trials if t["trial"] == refusal.trial)
    assert trial["state"] in ("abandoned", "rejected")
    assert "max_step 40" in refusal.message and refusal.command is None  # nothing was sent for it


def test_the_mbe_driver_refuses_a_heat_up_its_ramp_rate_cannot_make_in_time() -> None:
    # The live driver refuses too, before any setpoint; here a faster configured rate would do.
    port = in_process_port("mbe", seed=0)
    driver = MbeDriver("sim://mbe", {"ramp_rate": {"ru_cell_temp": 5.0}, "stabilize_timeout_s": 5400.0}, port=port)
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=StationClock(0.0), trial_id=1, journal=lambda d, t: journal.append((d, t)))
    conditions = {"sr_cell_temp": 470.0, "ru_cell_temp": 1850.0, "substrate_temp": 700.0, "ozone_flow": 5.0}
    with pytest.raises(EnvelopeViolation) as refused:
        driver.run(conditions, ctx)
    assert refused.value.parameter == "ru_cell_temp"
    assert "raise instrument.options.ramp_rate.ru_cell_temp (at most max_rate 10)" in refused.value.reason
    assert journal[-1][1].startswith("REFUSED RU_CELL:SP 1850.0: ramping from 1")
    assert port.device.model.record == []  # nothing was set on the controller
    # With the budget it needs (650 degC at 5 degC/min: 130 min), the same growth runs.
    patient = MbeDriver("sim://mbe", {"ramp_rate": {"ru_cell_temp": 5.0}, "stabilize_timeout_s": 3 * 3600.0, "ex_situ_s": 60.0},
                        port=in_process_port("mbe", seed=0))
    assert patient.run(conditions, InstrumentContext(clock=StationClock(0.0), trial_id=1)).values


# -- bad input ---------------------------------------------------------------------------------------


def test_a_protocol_that_fails_validation_exits_2_without_a_dry_run(tmp_path: Path) -> None:
    protocol = small_mbe(tmp_path, ("ru_cell_temp:   {type: float, low: 1830, high: 1890",
                                    "ru_cell_temp:   {type: float, low: 1830, high: 2100"))
    done = CliRunner().invoke(main, ["validate", "--dry-run", str(protocol)])
    assert done.exit_code == 2
    assert "dry run" not in done.stdout
    assert "ru_cell_temp" in done.stderr and "2000" in done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--port", "/dev/pts/0"], "--port only apply with --dry-run"),
        (["--dry-run", "--time-scale", "100"], "give --port too"),
    ],
)
def test_dry_run_options_out_of_place_are_usage_errors(args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(main, ["validate", *args, str(RAMP_TOO_FAST)])
    assert result.exit_code == 2
    assert complaint in result.output


def test_a_port_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--dry-run", "--port", str(tmp_path / "nope"),
                                       "--time-scale", "36000", str(small_mbe(tmp_path))])
    assert result.exit_code == 2, result.output
    assert "nope: no such device" in result.output


def test_a_port_for_an_in_process_simulator_is_bad_input(tmp_path: Path) -> None:
    port = tmp_path / "pts"
    port.touch()
    result = CliRunner().invoke(main, ["validate", "--dry-run", "--port", str(port),
                                       str(ROOT / "protocols" / "pool_melting_points.yaml")])
    assert result.exit_code == 2, result.output
    assert "sim:lookup is a simulator in this process" in result.output


# -- warnings, approvals, operator steps -------------------------------------------------------------


@pytest.mark.slow
def test_an_unreachable_target_and_every_approval_are_reported(tmp_path: Path) -> None:
    protocol = small_mbe(tmp_path, ("rrr: {direction: maximize, target: 72}", "rrr: {direction: maximize, target: 500}"),
                         ("approval:\n  mode: outside_region", "approval:\n  mode: every"))
    report = dry_run(protocol)
    assert report.exit_code == 0  # a warning, not a safety problem
    assert [a["trial"] for a in report.approvals] == [t["trial"] for t in report.trials]
    assert {a["why"] for a in report.approvals} == {"approval: every"}
    [warning] = [w for w in report.warnings if w.startswith("rrr:")]
    assert "beyond anything the simulator reaches" in warning
    assert report.wall_time_estimate_s >= report.campaign_time_s + 300 * len(report.approvals)


@pytest.mark.slow
def test_the_dry_run_prints_the_schedule_utilization_bottleneck_and_films_per_day(
    branin_protocol: Callable[..., Path],
) -> None:
    # Two simulated stations, one trial a virtual minute each, one injected fault (retried).
    protocol = branin_protocol(trials=8, options="noise_sd: 0.01, stations: 2, fault_rate: 0.35", retries=3)
    result = CliRunner().invoke(main, ["validate", "--dry-run", str(protocol)])
    assert result.exit_code == 0, result.output
    report = dry_run(protocol)
    schedule = report.schedule
    assert schedule is not None and [u.station for u in schedule.stations] == ["branin-1", "branin-2"]
    # One span per trial that ran: the stations' busy time is the instrument time the report adds up.
    assert sum(u.busy_s for u in schedule.stations) == pytest.approx(report.instrument_time_s)
    assert schedule.horizon_s == pytest.approx(report.campaign_time_s)
    assert schedule.faults == report.states["abandoned"] == 1
    assert schedule.completed == report.states["measured"] + report.states.get("failed", 0)
    assert schedule.predicted_per_day == pytest.approx(2 * 86400 / 60)  # two stations, 60 s a trial
    for u in schedule.stations:
        assert f"    measure · {u.station}: {u.utilization:.1%} busy ({u.spans} spans" in result.output
    assert f"  bottleneck: measure ({schedule.bottleneck.utilization:.1%} busy, mean of 2 stations)" in result.output
    assert "  predicted: 2880 films per day at steady state (measure: 2 stations, 1 min a sample)" in result.output
    assert f"  finished: {schedule.completed} sample(s) with a result in 5 min" in result.output
    assert "  incidents: 1 step(s) ended by an instrument fault" in result.output
    assert report.to_dict()["schedule"]["bottleneck"] == "measure"


@pytest.mark.slow
def test_a_ramp_that_dominates_the_time_budget_is_a_warning(tmp_path: Path) -> None:
    # Five-minute growths measured a minute later: the hour-long climb of the Ru cell is most of each run.
    protocol = small_mbe(tmp_path, ("growth_time:    {type: fixed, value: 60, unit: min}",
                                    "growth_time:    {type: fixed, value: 5, unit: min}"),
                         ("  connection: sim://mbe", "  options: {ex_situ_s: 60}\n  connection: sim://mbe"))
    report = dry_run(protocol)
    assert report.exit_code == 0, format_report(report)
    assert report.ramp_time_s > 0.5 * report.instrument_time_s
    [warning] = [w for w in report.warnings if w.startswith("ramps take")]
    assert "dominate the time budget" in warning


@pytest.mark.slow
def test_manual_loading_steps_count_in_the_live_wall_time(tmp_path: Path) -> None:
    protocol = edited_copy(
        ROOT / "protocols" / "trmc_opv_blend.yaml", tmp_path,
        ("options: {averages: 64, wavelength: 500 nm}", "options: {averages: 64, wavelength: 500 nm, manual_loading: true}"),
        ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 4}"),
        ("initial: {method: sobol, n: 8}", "initial: {method: sobol, n: 3}"),
    )
    report = dry_run(protocol)
    assert report.exit_code == 0, format_report(report)
    assert [s["trial"] for s in report.operator_steps] == [1, 2, 3, 4]
    assert all("into the cavity" in s["step"] for s in report.operator_steps)
    assert report.wall_time_estimate_s >= report.campaign_time_s + 4 * 300
    assert any("only 3 initial points for 4 searched" in w for w in report.warnings)


# -- the checks on their own -------------------------------------------------------------------------


def test_margins_name_the_closest_trial_bound_and_step() -> None:
    limits = {"t": Limit(min=0.0, max=200.0, unit="degC", max_step=50.0), "mode": Limit(allowed=("a", "b"))}
    sent = [(1, "s", {"t": 20.0, "mode": "a"}), (2, "s", {"t": 190.0, "mode": "b"}), (3, "s", {"t": 150.0, "mode": "a"})]
    [m] = setpoint_margins(limits, sent)
    assert (m.setpoints, m.lowest, m.highest) == (3, 20.0, 190.0)
    assert (m.closest_trial, m.closest_bound) == (2, "max") and m.margin == pytest.approx(10 / 200)
    assert (m.step_trial, m.largest_step) == (2, 170.0) and m.step_fraction == pytest.approx(170 / 50)


def test_ramp_time_is_the_time_spent_polling_loops() -> None:
    rows = [("SUBSTRATE:SP 700.0", 0), ("SUBSTRATE:PV?", 0), ("SUBSTRATE:SP?", 0), ("SUBSTRATE:PV?", 15),
            ("SUBSTRATE:SP?", 15), ("SUBSTRATE:PV?", 30), ("SUBSTRATE:SP?", 30), ("BFM IN", 330), ("BFM:READ?", 390)]
    commands = [{"trial_id": 4, "direction": "tx", "text": text, "virtual_t": float(t), "t": 0.0} for text, t in rows]
    commands.insert(3, {"trial_id": 4, "direction": "rx", "text": "650.2", "virtual_t": 15.0, "t": 0.0})
    assert ramp_seconds(commands, lambda c: c["virtual_t"]) == {4: 30.0}


def test_folding_prints_a_repeated_poll_once() -> None:
    transcript = [{"t_s": 0.0, "direction": "tx", "text": "RU_CELL:SP 1850.0"}]
    for i in range(40):
        transcript += [{"t_s": 15.0 * i, "direction": "tx", "text": "RU_CELL:PV?"},
                       {"t_s": 15.0 * i, "direction": "rx", "text": f"{1200 + i:.2f}"},
                       {"t_s": 15.0 * i, "direction": "tx", "text": "RU_CELL:SP?"},
                       {"t_s": 15.0 * i, "direction": "rx", "text": "1850.00"}]
    transcript.append({"t_s": 600.0, "direction": "tx", "text": "BFM IN"})
    lines = fold_transcript(transcript)
    assert len(lines) == 5
    assert lines[1].endswith("RU_CELL:PV?  -> 1200.00") and lines[2].endswith("RU_CELL:SP?  -> 1850.00")
    assert "the 2 commands above sent 40 times in all, until 0:09:45" in lines[3]
    assert lines[4].endswith("BFM IN")


def test_a_clustered_initial_design_is_poor_coverage_and_a_spread_one_is_not() -> None:
    problem = Problem(SearchSpace((FloatParameter("a", 0.0, 1.0), FloatParameter("b", 0.0, 10.0))), (Objective("y"),))
    clustered = [{"a": 0.01 * i, "b": 0.1 * i} for i in range(8)]
    spread = [{"a": (i % 3) / 2, "b": 10 * (i // 3) / 2} for i in range(9)]
    poor, good = initial_coverage(problem, clustered, seed=1), initial_coverage(problem, spread, seed=1)
    assert poor is not None and poor.poor and poor.gap > 1.0
    assert good is not None and not good.poor and good.gap < good.typical_gap


# -- over a real pty: the emulator in its own process ------------------------------------------------


def mbe_emulator(*args: str) -> AbstractContextManager[str]:
    return emulator_process("mbe", *args)


@pytest.mark.slow
def test_a_dry_run_against_the_emulator_on_a_pty(tmp_path: Path) -> None:
    protocol = small_mbe(tmp_path, trials=3, initial=2)
    with mbe_emulator("--time-scale", "36000", "--seed", "3") as port:
        done = closedloop("validate", "--dry-run", "--json", "--port", port, "--time-scale", "36000", str(protocol),
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    [result] = json.loads(done.stdout)
    report = result["dry_run"]
    assert report["instrument"] == f"emulator at {port}"
    assert report["stop_reason"] == "budget: 3 of 3 trials done"
    sent = [x["text"] for x in report["transcript"] if x["direction"] == "tx"]
    assert sent[0] == "SR_CELL:PV?" and "SHUT:MAIN OPEN" in sent and sent[-1] == "GROW:MEAS?"
    # Times are the emulator's: a 60-minute growth shows as about an hour (the link's latency is scaled too).
    growth = next(x["t_s"] for x in report["transcript"] if x["text"] == "SHUT:MAIN OPEN")
    closed = max(x["t_s"] for x in report["transcript"] if x["text"] == "SHUT:MAIN CLOS")
    assert 3600 <= closed - growth < 3 * 3600
    # The schedule is on the emulator's clock too: the one station's busy time is the instrument time.
    schedule = report["schedule"]
    assert [s["station"] for s in schedule["stations"]] == ["mbe"]
    assert schedule["stations"][0]["busy_s"] == pytest.approx(report["instrument_time_s"])
    assert schedule["horizon_s"] >= 3 * 3600 and schedule["predicted_per_day"] < 24
