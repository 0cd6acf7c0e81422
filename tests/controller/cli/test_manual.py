"""A campaign measured by hand (`driver: manual`), through the CLI: validate, init, ask/tell with notes,
status, report, and `run` prompting the operator at the terminal (issue 20)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from tests import paths
from tests.controller.cli.campaigns import digest, invoke, refused, stored

MANUAL = paths.PROTOCOLS / "manual_spin_coating.yaml"


def protocol_copy(tmp_path: Path, *edits: tuple[str, str], trials: int | None = None) -> Path:
    """The shipped manual protocol with `edits` made (each must apply); `trials` shrinks the budget (all
    trials then come from the initial design: no GP fits, fast)."""
    text = MANUAL.read_text()
    if trials is not None:
        edits = (*edits, ("budget: {trials: 15}", f"budget: {{trials: {trials}}}"),
                 ("n: 5}", f"n: {trials}}}"))
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "manual.yaml"
    path.write_text(text)
    return path


def run(protocol: Path, db: Path, answers: str, *extra: str) -> Result:
    return CliRunner().invoke(main, ["run", str(protocol), "--db", str(db), "--no-report", *extra], input=answers)


# ---- validate ------------------------------------------------------------------------------------


def test_validate_summarizes_a_manual_instrument_without_an_envelope() -> None:
    result = invoke("validate", MANUAL)
    assert result.exit_code == 0, result.output
    assert ("  instrument: manual, measured by hand (no envelope: the space bounds what the operator is shown); "
            "measures roughness [nm], thickness [nm]") in result.stdout.splitlines()
    assert "envelope margins" not in result.stdout and "in-process simulator" not in result.stdout


def test_validate_refuses_an_objective_the_operator_does_not_measure(tmp_path: Path) -> None:
    bad = protocol_copy(tmp_path, ("roughness: {direction", "roughnes: {direction"))
    result = invoke("validate", bad)
    assert result.exit_code == 2
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if text.startswith("  roughnes:"))
    assert result.stderr == (f"{bad}:{line}:3: objectives.roughnes: 'roughnes' is not in instrument.measures; did you "
                             "mean 'roughness'? add roughnes: nm there (the values the operator measures: roughness, "
                             "thickness)\n")


@pytest.mark.parametrize(("edit", "message"), [
    (("measures: {roughness: nm, thickness: nm}", "measures: {roughness: nm, spin_speed: rpm}"),
     "instrument.measures.spin_speed: 'spin_speed' is both a parameter and a measured value"),
    (("  driver: manual\n", "  driver: manual\n  connection: /dev/ttyUSB0\n"),
     "instrument.connection: a manual instrument is a person at the terminal, with nothing to connect to"),
    (("measures: {roughness: nm, thickness: nm}", "measures: {roughness: nmm}"),
     "instrument.measures.roughness: unknown unit 'nmm'; did you mean 'nm'?"),
])
def test_validate_locates_mistakes_in_the_manual_section(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    result = invoke("validate", protocol_copy(tmp_path, edit))
    assert result.exit_code == 2 and message in result.stderr, result.output


# ---- init, then ask / tell / status / report -------------------------------------------------------


def test_init_creates_the_campaign_and_says_what_to_do_next(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    result = invoke("init", MANUAL, "--db", db)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"created {db}: campaign spin-coating-by-hand (15 trials); no instrument was touched\n"
        "next: propose a trial, run it, record its result (--failed if the sample failed, --note TEXT for why):\n"
        f"  closedloop ask {db}\n"
        f"  closedloop tell {db} --trial 1 roughness=... thickness=...\n"
        "or be prompted for each trial at this terminal:\n"
        f"  closedloop resume {db}\n")
    assert stored(db)[0] == []  # a campaign, no trial yet
    with Campaign.open(db) as c:
        assert c.status()["status"] == "idle" and c.protocol.name == "spin-coating-by-hand"


def test_init_refuses_an_existing_file_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    assert invoke("init", MANUAL, "--db", db).exit_code == 0
    assert invoke("ask", db).exit_code == 0
    before = digest(db)
    refused(invoke("init", MANUAL, "--db", db), f"--db {db}", "`init` never overwrites", f"closedloop resume {db}")
    assert digest(db) == before


def test_init_refuses_what_validate_refuses_and_creates_no_file(tmp_path: Path) -> None:
    bad = protocol_copy(tmp_path, ("roughness: {direction", "roughnes: {direction"))
    db = tmp_path / "films.sqlite"
    result = invoke("init", bad, "--db", db)
    assert result.exit_code == 2 and "objectives.roughnes: 'roughnes' is not in instrument.measures" in result.stderr
    assert not db.exists()


def test_init_names_the_file_like_run_does(tmp_path: Path) -> None:
    os.chdir(tmp_path)  # pytest puts the working folder back after the test
    result = invoke("init", MANUAL)
    assert result.exit_code == 0, result.output
    (created,) = (tmp_path / "campaigns").glob("spin-coating-by-hand-*.sqlite")
    assert result.stdout.startswith(f"created {created.relative_to(tmp_path)}: ")


def test_a_hand_measured_campaign_from_init_to_report(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    assert invoke("init", MANUAL, "--db", db).exit_code == 0
    asked = invoke("ask", db, "-n", 2)
    assert asked.exit_code == 0 and asked.stdout.startswith("trial 1: spin_speed=")
    told = invoke("tell", db, "--trial", 1, "roughness=2.4", "thickness=0.31 um", "--note", "slight comet streak")
    assert (told.exit_code, told.stdout) == (0, f"recorded 1 result(s) in {db}\n")
    assert invoke("tell", db, "--trial", 2, "--failed", "--note", "film dewetted on the hot plate").exit_code == 0
    with Campaign.open(db) as c:
        first, second = c.store.trial(1), c.store.trial(2)
    assert (first.state, first.values, first.detail) == ("measured", {"roughness": 2.4, "thickness": pytest.approx(310.0)},
                                                         "slight comet streak")
    assert (second.state, second.values, second.detail) == ("failed", {}, "film dewetted on the hot plate")
    status = invoke("status", db)
    assert status.exit_code == 0
    assert "results: 2 of 15; trials by state: failed 1, measured 1" in status.stdout
    assert "best: roughness=2.4" in status.stdout
    assert "state trial 2 dispatched->failed film dewetted on the hot plate" in status.stdout
    report = invoke("report", db)
    assert report.exit_code == 0, report.output
    page = db.with_suffix(".html").read_text()
    assert "manual, by hand (an operator enters each result)" in page and "film dewetted on the hot plate" in page


def test_tell_refuses_a_value_the_operator_does_not_measure(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    with Campaign.create(MANUAL, db) as c:
        c.ask(1)
    before = stored(db)
    refused(invoke("tell", db, "--trial", 1, "roughness=2", "gloss=3"), "gloss", "roughness, thickness")
    assert stored(db) == before


# ---- run: the operator at the terminal --------------------------------------------------------------


def test_run_asks_each_value_converts_units_asks_again_and_records_failures(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    answers = "\n".join([
        "2.4", "310", "",                      # trial 1: plain numbers, no note
        "abc", "12 nm", "0.3 um", "even film",  # trial 2: a typo asked again; um converted to nm
        "f", "dewetted",                        # trial 3: failed, with why
    ]) + "\n"
    result = run(protocol_copy(tmp_path, trials=3), db, answers)
    assert result.exit_code == 0, result.output
    assert "stopped: budget: 3 of 3 trials done" in result.stdout
    assert "could not read 'abc': expected a number or a quantity such as '10 nm', got 'abc'" in result.stderr
    assert "trial 1: run it by hand with" in result.stderr and "roughness [nm]?" in result.stderr
    with Campaign.open(db) as c:
        trials = c.store.trials()
        commands = c.store.commands(trial_id=2)
    assert [(t.state, t.values, t.detail) for t in trials] == [
        ("measured", {"roughness": 2.4, "thickness": 310.0}, "entered by the operator"),
        ("measured", {"roughness": 12.0, "thickness": pytest.approx(300.0)}, "even film"),
        ("failed", {}, "dewetted"),
    ]
    assert [c["text"] for c in commands if c["direction"] == "rx"] == ["abc", "12 nm", "0.3 um", "even film"]


def test_run_asks_again_for_a_value_tell_would_refuse_on_a_log_scale(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    log_scale = ("roughness: {direction: minimize, unit: nm}", "roughness: {direction: minimize, unit: nm, log: true}")
    result = run(protocol_copy(tmp_path, log_scale, trials=1), db, "0\n0.8\n310\n\n")
    assert result.exit_code == 0, result.output
    assert "roughness is modelled on a log scale (log: true in the protocol), so it needs a value > 0" in result.stderr
    with Campaign.open(db) as c:
        assert c.store.trial(1).values == {"roughness": 0.8, "thickness": 310.0}


def test_a_result_is_stored_in_the_objectives_unit_so_its_target_means_what_the_protocol_says(tmp_path: Path) -> None:
    """The operator measures roughness in nm; the protocol optimizes it in um with a target of 0.002 um (2 nm).
    Results are stored in um: the second film, 1.5 nm, reaches the target; `tell` reads um as well."""
    db = tmp_path / "films.sqlite"
    in_um = ("roughness: {direction: minimize, unit: nm}", "roughness: {direction: minimize, unit: um, target: 0.002}")
    protocol = protocol_copy(tmp_path, in_um, trials=3)
    result = run(protocol, db, "5\n300\n\n1.5\n300\n\n")
    assert result.exit_code == 0, result.output
    assert "stopped: target reached: roughness" in result.stdout
    with Campaign.open(db) as c:
        trials = c.store.trials()
        assert [(t.values["roughness"], t.units["roughness"]) for t in trials] == [
            (pytest.approx(0.005), "um"), (pytest.approx(0.0015), "um")]
    told = tmp_path / "told.sqlite"
    assert invoke("init", protocol, "--db", told).exit_code == 0 and invoke("ask", told).exit_code == 0
    assert invoke("tell", told, "--trial", 1, "roughness=0.004", "thickness=300").exit_code == 0
    with Campaign.open(told) as c:
        assert c.store.trial(1).values["roughness"] == pytest.approx(0.004)


def test_run_shows_each_trials_conditions_rounded_with_units(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    result = run(protocol_copy(tmp_path, trials=1), db, "1\n2\n\n")
    assert result.exit_code == 0, result.output
    with Campaign.open(db) as c:
        conditions = c.store.trial(1).conditions
    shown = result.stderr.splitlines()
    assert f"  spin_speed     {conditions['spin_speed']} rpm" in shown
    assert f"  anneal_temp    {conditions['anneal_temp']:.4g} degC" in shown
    assert f"  concentration  {conditions['concentration']:.4g} mg/mL" in shown
    assert "  spin-coat 60 s, anneal 10 min on the hot plate, then AFM (roughness) and profilometer (thickness)" in shown


def test_run_pauses_when_the_input_ends_and_keeps_nothing_half_entered(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    result = run(protocol_copy(tmp_path, trials=3), db, "2.4\n310\n\n5\n")  # trial 2: roughness only, then EOF
    assert result.exit_code == 130, result.output
    assert ("paused: operator absent: standard input closed while waiting for the operator's answer "
            "(trial 2: thickness [nm]?)") in result.stderr
    assert f"continue with: closedloop resume {db}" in result.stderr
    with Campaign.open(db) as c:
        trials = c.store.trials()
        status = c.status()
    # Trial 2's roughness was never stored: the trial is abandoned and the same conditions wait to be run.
    assert [(t.id, t.state, t.values) for t in trials] == [
        (1, "measured", {"roughness": 2.4, "thickness": 310.0}), (2, "abandoned", {}), (3, "proposed", {})]
    assert trials[2].conditions == trials[1].conditions
    assert status["status"] == "paused"


def test_resume_prompts_for_the_trial_a_pause_left_waiting(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    assert run(protocol_copy(tmp_path, trials=2), db, "").exit_code == 130  # nobody answered trial 1
    result = CliRunner().invoke(main, ["resume", str(db), "--no-report"], input="1\n2\n\n3\n4\n\n")
    assert result.exit_code == 0, result.output
    with Campaign.open(db) as c:
        trials = c.store.trials()
    assert [(t.state, t.origin) for t in trials] == [("abandoned", "initial"), ("measured", "retry"), ("measured", "initial")]
    assert trials[1].conditions == trials[0].conditions


def test_resume_asks_first_for_the_trials_handed_out_with_ask(tmp_path: Path) -> None:
    """A person asks for two trials, measures one, and then lets `resume` prompt: the two handed-out trials
    (oldest first) are asked, with their own ids, before anything new; nothing is abandoned."""
    db = tmp_path / "films.sqlite"
    assert invoke("init", protocol_copy(tmp_path, trials=3), "--db", db).exit_code == 0
    assert invoke("ask", db, "-n", 2).exit_code == 0
    result = CliRunner().invoke(main, ["resume", str(db), "--no-report"], input="1\n10\n\n2\n20\n\n3\n30\n\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.index("trial 1: run it by hand") < result.stderr.index("trial 2: run it by hand")
    with Campaign.open(db) as c:
        trials = c.store.trials()
    assert [(t.id, t.state, t.origin, t.values.get("thickness")) for t in trials] == [
        (1, "measured", "manual", 10.0), (2, "measured", "manual", 20.0), (3, "measured", "initial", 30.0)]


@pytest.mark.parametrize("extra", [["--sim"], ["--port", "/dev/null"]])
def test_run_refuses_a_simulator_or_port_for_an_instrument_run_by_hand(tmp_path: Path, extra: list[str]) -> None:
    db = tmp_path / "films.sqlite"
    refused(run(MANUAL, db, "", *extra), "driver manual: a person runs each trial",
            "no simulator stands in for them (--sim, a dry run) and there is no port (--port)")
    assert not db.exists()


def test_a_dry_run_says_there_is_nothing_to_simulate(tmp_path: Path) -> None:
    result = invoke("validate", "--dry-run", "--scratch-dir", tmp_path, MANUAL)
    assert result.exit_code == 2
    assert result.stderr == (f"{MANUAL}: driver manual: a person runs each trial, so no simulator stands in for them "
                             "(--sim, a dry run) and there is no port (--port); run it without them and enter each "
                             "result at the prompt\n")
    assert list(tmp_path.iterdir()) == []  # no campaign file was created


# ---- a real process: piped stdin, and Ctrl-C while the operator is being asked -----------------------


def closedloop(*args: object, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "closedloop", *map(str, args)], cwd=cwd, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_real_process_reads_the_operators_answers_from_a_pipe(tmp_path: Path) -> None:
    protocol = protocol_copy(tmp_path, trials=2)
    process = closedloop("run", protocol, "--db", "films.sqlite", "--no-report", cwd=tmp_path)
    out, err = process.communicate("3.1\n0.29 um\nfirst film\nF\nstreaks everywhere\n", timeout=300)
    assert process.returncode == 0, err
    assert out.splitlines() == ["stopped: budget: 2 of 2 trials done", "campaign file: films.sqlite"]
    assert "trial 2: run it by hand with" in err and "why did the sample fail? (optional; Enter for none)" in err
    with Campaign.open(tmp_path / "films.sqlite") as c:
        assert [(t.state, t.values, t.detail) for t in c.store.trials()] == [
            ("measured", {"roughness": 3.1, "thickness": pytest.approx(290.0)}, "first film"),
            ("failed", {}, "streaks everywhere"),
        ]


def test_ctrl_c_while_the_operator_is_asked_pauses_at_once_with_nothing_half_stored(tmp_path: Path) -> None:
    protocol = protocol_copy(tmp_path, trials=3)
    process = closedloop("run", protocol, "--db", "films.sqlite", "--no-report", cwd=tmp_path)
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write("2.4\n310\n\n4.0\n")  # trial 1 complete; trial 2: roughness, then nothing
    process.stdin.flush()
    seen: list[str] = []
    asked = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if line.startswith("thickness [nm]?") and sum(s.startswith("thickness") for s in seen) == 2:
                asked.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert asked.wait(timeout=240), "".join(seen)
    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=10)
    assert process.returncode == 130, "".join(seen)
    assert time.monotonic() - signalled < 8  # not the 10 s grace a stuck trial gets
    assert "paused: operator interrupt (Ctrl-C)\n" in seen
    with Campaign.open(tmp_path / "films.sqlite") as c:
        trials = c.store.trials()
    assert [(t.state, t.values) for t in trials] == [
        ("measured", {"roughness": 2.4, "thickness": 310.0}), ("abandoned", {}), ("proposed", {})]
    assert trials[1].detail == "operator abort: interrupted by the operator (Ctrl-C)"
