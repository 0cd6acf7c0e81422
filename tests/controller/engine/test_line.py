"""A line (issue 21): samples move through the steps of a `workflow:`, every station kept busy, each step
journaled; max_wait expiry, a failure or fault at any step, and a crash at any step then `resume`.

The protocol is a real line of existing simulators (two furnaces on sim://furnace, a robot transfer, a
simulated probe) for validate and `run --sim`; the step-by-step tests run the same protocol on scripted
stations in virtual time, so each step's duration and outcome is chosen by the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.protocol.validate import validate_protocol
from closedloop.controller.protocol.yaml_source import ProtocolError
from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Measurement,
    SafetyEnvelope,
)
from closedloop.records import Value
from tests.controller.cli.campaigns import invoke

FURNACE = """\
      driver: serial
      connection: sim://furnace
      serial: {baudrate: 9600, terminator: "\\n", timeout: 2 s}
      identify: {query: "*IDN?", expect: "KILNCO,TF-1200"}
      setup: ["*CLS", "ABOR", "SYST:REM"]
      set:
        anneal_temp: "SOUR:TEMP {value:.1f}"
        anneal_time: {command: "SOUR:DWEL {value:.0f}", unit: s}
        gas_flow: "SOUR:FLOW {value:.1f}"
      start: "INIT"
      wait: {query: "STAT:OPER?", until: "^IDLE", poll: 30 s, timeout: 4 h}
      measure:
        sheet_resistance: {query: "FETC:RES?", parse: float, unit: ohm}
      error_query: "SYST:ERR?"
      safe_state: ["SOUR:TEMP 25", "SOUR:FLOW 0", "ABOR"]
      envelope:
        anneal_temp: {min: 20, max: 450, unit: degC, max_step: 300}
        anneal_time: {min: 0, max: 240, unit: min}
        gas_flow:    {min: 0, max: 500, unit: sccm}
"""

LINE = f"""\
name: test-line
description: furnace anneal, robot transfer, then a simulated probe
space:
  anneal_temp: {{type: float, low: 150, high: 400, unit: degC}}
  anneal_time: {{type: float, low: 5, high: 60, unit: min}}
  gas_flow:    {{type: float, low: 10, high: 200, unit: sccm}}
  x1: {{type: float, low: -5, high: 10}}
  x2: {{type: float, low: 0, high: 15}}
objectives:
  y: {{direction: minimize}}
workflow:
  anneal:
    instrument:
{FURNACE}    parameters: [anneal_temp, anneal_time, gas_flow]
    stations: 2
    on_crash: lost
  move:
    transfer: robot
    duration: 30 s
  probe:
    instrument: {{driver: "sim:branin", connection: "sim://branin"}}
    parameters: [x1, x2]
    max_wait: 30 min
planner: {{initial: {{method: sobol, n: 6}}, seed: 3}}
budget: {{trials: 6}}
approval: none
"""


def line_file(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    text = LINE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "line.yaml"
    path.write_text(text)
    return path


def step_events(db: Path, trial: int | None = None) -> list[tuple[int, str, str, str | None]]:
    with Campaign.open(db) as c:
        return [(e["trial_id"], e["data"]["step"], e["data"]["phase"], e["data"]["station"])
                for e in c.store.events(trial_id=trial, kinds=["step"])]


# ---- the protocol ------------------------------------------------------------------------------------


def test_a_workflow_is_valid_and_each_step_is_checked_as_its_own_instrument(tmp_path: Path) -> None:
    protocol = load_protocol(line_file(tmp_path))
    report = validate_protocol(protocol)
    assert report.problems == []
    assert [(s.name, s.driver, s.parameters, s.stations) for s in report.summary.steps] == [
        ("anneal", "serial", ["anneal_temp", "anneal_time", "gas_flow"], 2),
        ("move", "transfer (robot)", [], 1),
        ("probe", "sim:branin", ["x1", "x2"], 1),
    ]
    assert report.summary.steps[0].measures == {"sheet_resistance": "ohm"} and not report.summary.steps[0].repeatable
    # The furnace step's envelope is checked like a one-instrument protocol's, located inside the step.
    hot = line_file(tmp_path, ("anneal_temp: {min: 20, max: 450", "anneal_temp: {min: 20, max: 300"))
    problems = validate_protocol(load_protocol(hot)).problems
    assert [(p.field, p.message) for p in problems] == [
        ("space.anneal_temp.high", "high 400 degC is above the anneal step's serial instrument's maximum 300 degC")]


@pytest.mark.parametrize(("edit", "field", "message"), [
    (("parameters: [x1, x2]", "parameters: [x1]"), "space.x2", "no step of the workflow receives 'x2'"),
    (("parameters: [x1, x2]", "parameters: [x1, x2, gas_flow]"), "space.gas_flow",
     "'gas_flow' is received by several steps (anneal, probe)"),
    (("parameters: [x1, x2]", "parameters: [x1, x2, x3]"), "workflow.probe.parameters[2]", "'x3' is not a parameter"),
    (("    transfer: robot\n", "    transfer: robot\n    parameters: [x1]\n"), "workflow.move.parameters",
     "a transfer receives no parameters"),
    (("    transfer: robot\n", ""), "workflow.move.instrument", "a step runs on an instrument"),
    (("    max_wait: 30 min", "    max_wait: 0 s"), "workflow.probe.max_wait", "max_wait must be a positive time"),
    (("    stations: 2\n", "    stations: 2\n    connections: [sim://furnace]\n"), "workflow.anneal.connections",
     "1 connection(s) for 2 station(s): give one for each station"),
    (("approval: none", "approval: none\ninstrument: {driver: 'sim:branin', connection: 'sim://branin'}"),
     "workflow", "give either instrument"),
])
def test_a_line_mistake_is_refused_at_its_place(tmp_path: Path, edit: tuple[str, str], field: str, message: str) -> None:
    with pytest.raises(ProtocolError) as refusal:
        load_protocol(line_file(tmp_path, edit))
    assert any(p.field == field and message in p.message and p.line > 0 for p in refusal.value.problems), \
        refusal.value.problems


def test_a_one_instrument_protocol_is_a_line_of_one_step_and_journals_no_steps(tmp_path: Path, branin_protocol) -> None:  # type: ignore[no-untyped-def]
    path = branin_protocol(trials=2, n_init=2)
    protocol = load_protocol(path)
    assert not protocol.is_line and [(s.name, s.parameters) for s in protocol.steps()] == [("branin", ("x1", "x2"))]
    db = tmp_path / "one.sqlite"
    with Campaign.create(path, db) as c:
        assert c.run(sim=True).kind is HaltKind.BUDGET
    assert step_events(db) == []


# ---- run --sim on the real simulators ------------------------------------------------------------------


def test_the_line_runs_in_sim_with_every_sample_through_every_step_and_both_furnaces_busy(tmp_path: Path) -> None:
    db = tmp_path / "line.sqlite"
    result = invoke("run", line_file(tmp_path), "--db", db, "--sim", "--no-report")
    assert result.exit_code == 0, result.output
    assert "stopped: budget: 6 of 6 trials done" in result.stdout
    events = step_events(db)
    for trial in range(1, 7):
        mine = [(step, phase) for t, step, phase, _ in events if t == trial]
        assert mine == [("anneal", "started"), ("anneal", "done"), ("move", "started"), ("move", "done"),
                        ("probe", "started"), ("probe", "done")]
    assert {station for _, step, _, station in events if step == "anneal"} == {"anneal-1", "anneal-2"}
    with Campaign.open(db) as c:
        trials = c.store.trials()
        moves = [e for e in c.store.events(kinds=["step"]) if e["data"]["step"] == "move"]
    assert all(t.state == "measured" and set(t.values) == {"sheet_resistance", "y"} for t in trials)
    # The robot's move takes its 30 s of virtual time.
    starts = {e["trial_id"]: e["virtual_t"] for e in moves if e["data"]["phase"] == "started"}
    ends = {e["trial_id"]: e["virtual_t"] for e in moves if e["data"]["phase"] == "done"}
    assert all(ends[t] - starts[t] == pytest.approx(30.0) for t in starts)
    # Two furnaces: the second sample starts at once, while the first anneals.
    with Campaign.open(db) as c:
        first_two = [e["virtual_t"] for e in c.store.events(kinds=["step"])
                     if e["data"]["phase"] == "started" and e["data"]["step"] == "anneal"][:2]
    assert first_two == [0.0, 0.0]


# ---- scripted stations: every step's timing and outcome chosen by the test -----------------------------


class Scripted:
    """A step's instrument in virtual time: takes `seconds`, measures `measures`, and for the trials in
    `fail` gives a failed sample, in `fault` raises an instrument fault."""

    def __init__(self, seconds: float, measures: Mapping[str, float] | None = None) -> None:
        self.seconds, self.measures = seconds, dict(measures or {})
        self.fail: set[int] = set()
        self.fault: set[int] = set()
        self.ran: list[int] = []

    def describe(self) -> DriverDescription:
        return DriverDescription("scripted", SafetyEnvelope({}), {k: "" for k in self.measures})

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Every setting is accepted: the line's steps, not an envelope, are under test."""

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.ran.append(ctx.trial_id)
        ctx.clock.sleep(self.seconds)
        if ctx.trial_id in self.fault:
            raise InstrumentFault("no reply")
        if ctx.trial_id in self.fail:
            return Measurement(status="failed_sample", detail="film dewetted")
        values = {k: v + ctx.trial_id for k, v in self.measures.items()}
        return Measurement(values=values, units={k: "" for k in values})

    def safe_state(self) -> None:
        """Nothing is held at a setpoint."""

    def close(self) -> None:
        """There is no port."""


def line_steps(**override: Scripted) -> dict[str, Scripted]:
    """Each step's scripted instrument: 10 min anneals measuring a sheet resistance, a 30 s move, a 1 min
    probe measuring y (a trial's values are these plus its id)."""
    steps = {"anneal": Scripted(600, {"sheet_resistance": 100.0}), "move": Scripted(30), "probe": Scripted(60, {"y": 1.0})}
    return steps | override


def scripted_run(db: Path, steps: dict[str, Scripted]):  # type: ignore[no-untyped-def]
    """Run the line on scripted stations (two furnaces) in virtual time; returns the halt."""
    stations = [Station(f"anneal-{i + 1}", steps["anneal"], virtual=True, step=0) for i in range(2)]
    stations += [Station("move", steps["move"], virtual=True, step=1), Station("probe", steps["probe"], virtual=True, step=2)]
    with Campaign.open(db, writer=True) as c:
        return c.run_with(stations, gate=protocol_gate(c.protocol))


def created(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    db = tmp_path / "line.sqlite"
    Campaign.create(line_file(tmp_path, *edits), db).close()
    return db


def test_a_sample_that_waits_past_max_wait_is_a_failed_sample_saying_so(tmp_path: Path) -> None:
    # Two furnaces finish together; the probe takes 20 min, so the second sample waits 20 min for it (> 10).
    db = created(tmp_path, ("max_wait: 30 min", "max_wait: 10 min"))
    probe = Scripted(20 * 60, {"y": 1.0})
    scripted_run(db, line_steps(move=Scripted(0), probe=probe))
    with Campaign.open(db) as c:
        trials = c.store.trials()
        expired = [e for e in c.store.events(kinds=["step"]) if e["data"]["phase"] == "expired"]
    assert expired and all(e["data"]["step"] == "probe" and e["data"]["max_wait_s"] == 600 for e in expired)
    late = next(t for t in trials if t.id == expired[0]["trial_id"])
    assert late.state == "failed" and re.fullmatch(
        r"failed at probe: waited \d+\.\d min for probe, longer than its max_wait of 10 min", late.detail), late.detail
    assert late.values == {"sheet_resistance": pytest.approx(100.0 + late.id)}  # what it measured before is kept
    assert late.id not in probe.ran
    # Failed, and counted against the budget; but the planner is not told its conditions fail: the line was busy.
    from closedloop.controller.engine import history

    with Campaign.open(db) as c:
        problem = c.protocol.to_problem()
        assert late.analysis == history.EXPIRED and history.n_results(trials) == len(trials)
        shown = [o.conditions for o in history.observations(problem, trials)]
    assert late.conditions not in shown and len(shown) == len(trials) - len(expired)
    # The report's model view pairs each observation with its trial (observed_ids): an expired film is neither.
    assert late.id not in history.observed_ids(problem, trials) and len(history.observed_ids(problem, trials)) == len(shown)
    with Campaign.open(db) as c:
        page = c.report(tmp_path / "line.html").read_text()
    assert 'data-plot="schedule-gantt"' in page


@pytest.mark.parametrize("at", ["anneal", "move", "probe"])
def test_a_failed_sample_at_any_step_ends_its_way_there_and_is_data(tmp_path: Path, at: str) -> None:
    db = created(tmp_path)
    steps = line_steps()
    steps[at].fail = {2}
    scripted_run(db, steps)
    with Campaign.open(db) as c:
        failed = c.store.trial(2)
    assert failed.state == "failed" and failed.detail == f"failed at {at}: film dewetted"
    order = ["anneal", "move", "probe"]
    assert all(2 not in steps[name].ran for name in order[order.index(at) + 1:])  # its way ended there
    assert [p for _, s, p, _ in step_events(db, 2)][-1] == "failed" and step_events(db, 2)[-1][1] == at


@pytest.mark.parametrize("at", ["anneal", "move", "probe"])
def test_a_fault_at_any_step_abandons_the_sample_and_runs_its_conditions_again(tmp_path: Path, at: str) -> None:
    db = created(tmp_path)
    steps = line_steps()
    steps[at].fault = {1}
    scripted_run(db, steps)
    with Campaign.open(db) as c:
        first, retry = c.store.trial(1), next(t for t in c.store.trials() if t.retry_of == 1)
    assert first.state == "abandoned" and "no reply" in first.detail
    assert retry.conditions == first.conditions and retry.state == "measured"
    assert (1, at, "fault", at if at != "anneal" else "anneal-1") in step_events(db, 1)


# ---- a crash at each step, then resume ------------------------------------------------------------------


KILL_AT = """
import os, signal, sys
from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from tests.controller.engine.test_line import Scripted, line_steps

class Killer(Scripted):
    def run(self, conditions, ctx):
        if ctx.trial_id == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # the controller dies in the middle of this step
        return super().run(conditions, ctx)

at = sys.argv[2]
steps = line_steps()
steps[at] = Killer(steps[at].seconds, steps[at].measures)
stations = [Station("anneal-1", steps["anneal"], virtual=True, step=0), Station("anneal-2", steps["anneal"], virtual=True, step=0),
            Station("move", steps["move"], virtual=True, step=1), Station("probe", steps["probe"], virtual=True, step=2)]
with Campaign.open(sys.argv[1], writer=True) as c:
    c.run_with(stations, gate=protocol_gate(c.protocol))
"""


@pytest.mark.parametrize("at", ["anneal", "move", "probe"])
def test_sigkill_in_any_step_then_resume_goes_on_from_that_step(tmp_path: Path, at: str) -> None:
    """Killed while trial 2 is in `at`: resume repeats a repeatable step (move, probe) with the sample and
    what it measured so far, and records the sample as lost where the step cannot be repeated (anneal,
    on_crash: lost), running its conditions again as a new trial. Nothing measured is lost."""
    db = created(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(db), at], cwd=Path(__file__).parents[3],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    before = {t.id: (t.state, t.values) for t in Campaign.open(db).store.trials()}
    steps = line_steps()
    halt = scripted_run(db, steps)
    assert halt.kind is HaltKind.BUDGET
    with Campaign.open(db) as c:
        trials = {t.id: t for t in c.store.trials()}
    for trial_id, (state, values) in before.items():
        if state == "measured":
            assert (trials[trial_id].state, trials[trial_id].values) == (state, values)  # nothing measured twice
    phases = [(s, p) for _, s, p, _ in step_events(db, 2)]
    if at == "anneal":
        assert ("anneal", "lost") in phases and trials[2].state == "abandoned"
        assert any(t.retry_of == 2 and t.state == "measured" for t in trials.values())
    else:
        assert (at, "repeat") in phases and trials[2].state == "measured"
        assert trials[2].values["sheet_resistance"] == pytest.approx(102.0)  # measured before the kill, kept
        assert 2 not in steps["anneal"].ran  # the anneal was not run twice


# ---- live: planning never holds a free station ----------------------------------------------------------


def test_live_the_planner_works_on_its_own_thread_while_samples_move_on(tmp_path: Path) -> None:
    """On the wall clock, with real GP fits (about a second each): a sample whose step ends goes on to the
    next step at once, even while the planner is fitting; the next proposal is ready when a furnace frees."""
    db = created(tmp_path, ("n: 6}", "n: 2}"), ("trials: 6", "trials: 8"))
    anneal, move, probe = Scripted(1.0, {"sheet_resistance": 100.0}), Scripted(0.05), Scripted(0.05, {"y": 1.0})
    stations = [Station(f"anneal-{i + 1}", anneal, step=0) for i in range(2)]
    stations += [Station("move", move, step=1), Station("probe", probe, step=2)]
    with Campaign.open(db, writer=True) as c:
        assert c.run_with(stations, gate=protocol_gate(c.protocol)).kind is HaltKind.BUDGET
        events = c.store.events(kinds=["step"])
        fitted = [t for t in c.store.trials() if t.origin == "planner"]
    assert fitted  # GP fits made while the line ran (how many depends on timing: plans go ahead of results)
    ended = {(e["trial_id"], e["data"]["index"]): e["t"] for e in events if e["data"]["phase"] == "done"}
    began = {(e["trial_id"], e["data"]["index"]): e["t"] for e in events if e["data"]["phase"] == "started"}
    gaps = [began[(t, i + 1)] - end for (t, i), end in ended.items() if (t, i + 1) in began]
    assert len(gaps) == 16 and max(gaps) < 0.25, gaps


# ---- starting samples: no film coated only to expire --------------------------------------------------------


def test_predicted_wait_queues_the_samples_ahead_on_the_next_steps_stations() -> None:
    from closedloop.controller.engine.line import predicted_wait

    # Two plates free at 10 and 30; one sample ahead, ready at 5, takes the plate free at 10 until 10 + 20.
    assert predicted_wait(12.0, [10.0, 30.0], [5.0], 20.0) == pytest.approx(30.0 - 12.0)
    assert predicted_wait(40.0, [10.0, 30.0], [5.0], 20.0) == 0.0
    assert predicted_wait(0.0, [0.0], [0.0], None) == float("inf")  # the plate is taken for an unknown time


def test_a_slow_step_after_the_first_gets_no_sample_that_would_expire_waiting_and_stays_busy(tmp_path: Path) -> None:
    """The anneal (second step here: a furnace-free line) takes 25 min on one station with a 10 min max_wait;
    coating takes 1 min. Starting a film whenever the coater is free would make most of them expire."""
    db = created(tmp_path, ("    stations: 2\n", ""), ("duration: 30 s\n", "duration: 30 s\n    max_wait: 10 min\n"),
                 ("trials: 6", "trials: 5"))
    steps = line_steps(anneal=Scripted(60, {"sheet_resistance": 100.0}), move=Scripted(25 * 60),
                       probe=Scripted(60, {"y": 1.0}))
    steps["move"].measures = {}
    stations = [Station("anneal-1", steps["anneal"], virtual=True, step=0), Station("move", steps["move"], virtual=True, step=1),
                Station("probe", steps["probe"], virtual=True, step=2)]
    with Campaign.open(db, writer=True) as c:
        assert c.run_with(stations, gate=protocol_gate(c.protocol)).kind is HaltKind.BUDGET
        events = c.store.events(kinds=["step"])
    assert [e for e in events if e["data"]["phase"] == "expired"] == []
    moves = sorted((e["virtual_t"], e["data"]["phase"]) for e in events if e["data"]["step"] == "move")
    starts = [t for t, phase in moves if phase == "started"]
    ends = [t for t, phase in moves if phase == "done"]
    # The slow step never idles for long: each run starts within the first step's minute of the last one's end.
    assert len(starts) == 5 and all(start - end <= 60.0 for start, end in zip(starts[1:], ends[:-1], strict=False))


def test_an_intermediate_result_of_a_step_can_be_an_outcome_constraint(tmp_path: Path) -> None:
    """The furnace step's sheet resistance is measured on the way, not optimized: a constraint may name it,
    in any unit of its dimension, and every trial's result carries it (see the --sim run above)."""
    path = line_file(tmp_path, ("objectives:", 'outcome_constraints: ["sheet_resistance <= 2 kohm"]\nobjectives:'))
    problem = load_protocol(path).to_problem()
    (constraint,) = problem.outcome_constraints
    assert (constraint.name, constraint.op, constraint.bound) == ("sheet_resistance", "<=", 2000.0)


def test_an_operator_transfer_waits_for_the_operator_at_the_terminal(tmp_path: Path) -> None:
    """`transfer: operator`: the run asks the person to move each sample and goes on when they press Enter;
    with nobody to answer (the input ends), the campaign pauses and the sample is not lost."""
    path = line_file(tmp_path, ("    transfer: robot\n    duration: 30 s\n", "    transfer: operator\n"),
                     ("trials: 6", "trials: 2"), ("n: 6}", "n: 2}"))
    db = tmp_path / "line.sqlite"
    result = invoke_with_input(["run", str(path), "--db", str(db), "--sim", "--no-report"], "\n\n")
    assert result.exit_code == 0, result.output
    assert "trial 1: move the sample of trial 1 to probe and confirm - press Enter when done" in result.stderr
    with Campaign.open(db) as c:
        steps = c.store.events(kinds=["operator_step"])
        assert [t.state for t in c.store.trials()] == ["measured", "measured"]
    assert sorted(e["trial_id"] for e in steps) == [1, 2]  # each move confirmed and journaled
    nobody = invoke_with_input(["run", str(path), "--db", str(tmp_path / "alone.sqlite"), "--sim", "--no-report"], "")
    assert nobody.exit_code == 130 and "operator absent" in nobody.stderr


def invoke_with_input(args: list[str], text: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from closedloop.controller.cli.main import main

    return CliRunner().invoke(main, args, input=text)


def test_the_dry_run_of_a_line_prints_its_schedule_and_writes_the_gantt(tmp_path: Path) -> None:
    path = line_file(tmp_path, ("trials: 6", "trials: 4"), ("n: 6}", "n: 4}"))
    result = invoke("validate", path, "--dry-run", "--report", tmp_path / "dry.html")
    assert result.exit_code == 0, result.output
    assert "bottleneck: anneal" in result.stdout and "· anneal-2:" in result.stdout
    assert f"report (the schedule as a Gantt chart): {tmp_path / 'dry.html'}" in result.stdout
    page = (tmp_path / "dry.html").read_text()
    assert 'data-plot="schedule-gantt"' in page and "anneal-2" in page
    nowhere = invoke("validate", path, "--dry-run", "--report", tmp_path / "no" / "dry.html")
    assert nowhere.exit_code == 2 and "write it into an existing folder" in nowhere.output


class ReadsBack(Scripted):
    """A probe that keeps its last result: after a crash, `recover` reads trial 2's back."""

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return Measurement(values={"y": 42.0}, units={"y": ""}, detail="read back") if trial_id == 2 else None


def test_after_sigkill_a_step_whose_driver_can_read_its_result_back_is_not_run_again(tmp_path: Path) -> None:
    db = created(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(db), "probe"], cwd=Path(__file__).parents[3],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    steps = line_steps(probe=ReadsBack(60, {"y": 1.0}))
    assert scripted_run(db, steps).kind is HaltKind.BUDGET
    with Campaign.open(db) as c:
        trial = c.store.trial(2)
    assert trial.state == "measured" and trial.values["y"] == 42.0 and 2 not in steps["probe"].ran
    assert [p for _, s, p, _ in step_events(db, 2) if s == "probe"] == ["started", "done"]  # no repeat
