"""The closed loop end to end through the Python API: real SQLite files, real planners, simulated
instruments in virtual time."""

from __future__ import annotations

import getpass
import io
from collections import defaultdict

import pytest

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.cli.approval import TerminalApprover
from closedloop.controller.engine.events import EngineEvent, TrialMeasured
from closedloop.controller.engine.halts import HaltKind
from tests import paths


def events_consistent(store) -> None:
    """Each trial's state events chain from 'proposed' to its current state without gaps."""
    chains: dict[int, list[tuple[str | None, str]]] = defaultdict(list)
    for e in store.events():
        if e["kind"] == "state":
            chains[e["trial_id"]].append((e["from_state"], e["to_state"]))
    for t in store.trials():
        chain = chains[t.id]
        assert chain, f"trial {t.id} has no state events"
        assert chain[0][1] == "proposed"
        for (_, prev_to), (frm, _) in zip(chain, chain[1:], strict=False):
            assert frm == prev_to, f"trial {t.id}: event chain broken: {chain}"
        assert chain[-1][1] == t.state


def test_campaign_runs_to_budget_with_everything_recorded(branin_protocol, tmp_path):
    c = Campaign.create(branin_protocol(trials=7, n_init=3), tmp_path / "c.sqlite")
    halt = c.run()
    assert halt.kind is HaltKind.BUDGET and halt.exit_code == 0 and halt.text == "budget: 7 of 7 trials done"
    trials = c.store.trials()
    assert [t.state for t in trials] == ["measured"] * 7
    assert sum(t.origin == "initial" for t in trials) == 3
    assert all(t.origin == "planner" for t in trials[3:])
    assert {c.store.proposal(t.id).planner for t in trials[3:]} == {"botorch"}
    for t in trials:
        directions = [cmd["direction"] for cmd in c.store.commands(t.id)]
        assert directions == ["tx", "rx"], f"trial {t.id} commands not journaled: {directions}"
        assert -5 <= t.conditions["x1"] <= 10 and 0 <= t.conditions["x2"] <= 15
    events_consistent(c.store)
    assert c.status()["status"] == "stopped"
    c.close()


@pytest.mark.slow
def test_botorch_beats_its_initial_design(branin_protocol, tmp_path):
    c = Campaign.create(branin_protocol(trials=14, n_init=4), tmp_path / "c.sqlite")
    c.run()
    ys = [t.values["y"] for t in c.store.trials()]
    # Branin's minimum is 0.398; the GP phase should find clearly better points than 4 Sobol points did.
    assert min(ys[4:]) < min(ys[:4])
    assert min(ys) < 2.0
    c.close()


@pytest.mark.slow
def test_stop_rules_target_wall_time_and_no_improvement(branin_protocol, tmp_path):
    with Campaign.create(branin_protocol(trials=30, target=8.0, name="t.yaml"), tmp_path / "t.sqlite") as c:
        halt = c.run()
        assert halt.kind is HaltKind.TARGET and halt.text == "target reached: y"
        assert min(t.values["y"] for t in c.store.trials()) <= 8.0
        assert c.store.campaign()["stop_reason"] == halt.text
    # Each Branin evaluation takes 60 s of virtual instrument time.
    with Campaign.create(branin_protocol(trials=30, wall="'5 min'", name="w.yaml"), tmp_path / "w.sqlite") as c:
        halt = c.run()
        assert halt.kind is HaltKind.WALL_TIME and halt.text.startswith("wall time")
        assert len(c.store.trials(states=["measured"])) == 5
    with Campaign.create(
        branin_protocol(trials=40, stop="no_improvement: 3", name="n.yaml"), tmp_path / "n.sqlite"
    ) as c:
        halt = c.run()
        assert halt.text == "no improvement in the last 3 trials" and halt.by_rule
        assert len(c.store.trials()) < 40


@pytest.mark.slow
def test_failed_samples_are_data_and_count_against_the_budget(branin_protocol, tmp_path):
    path = branin_protocol(trials=10, options="failure_rate: 0.4")
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        c.run()
        states = [t.state for t in c.store.trials()]
        assert states.count("failed") >= 1 and states.count("measured") >= 1
        assert len(states) == 10
        failed = c.store.trials(states=["failed"])[0]
        assert failed.values == {} and failed.measurement_status == "failed_sample"


def test_instrument_faults_are_retried_with_a_journaled_link(branin_protocol, tmp_path):
    path = branin_protocol(trials=8, options="fault_rate: 0.35", retries=3)
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        c.run()
        trials = c.store.trials()
        abandoned = [t for t in trials if t.state == "abandoned"]
        assert abandoned, "with a 35 % fault rate some attempt must have failed"
        for t in abandoned:
            retries = [r for r in trials if r.retry_of == t.id]
            assert len(retries) == 1 and retries[0].conditions == t.conditions
            assert retries[0].origin == "retry" and retries[0].attempt == t.attempt + 1
        assert sum(t.state == "measured" for t in trials) == 8
        assert any(e["kind"] == "fault" for e in c.store.events())
        events_consistent(c.store)


def test_fault_policy_pause_then_resume(branin_protocol, tmp_path):
    path = branin_protocol(trials=4, options="fault_rate: 1.0", retries=0, on_fault="pause")
    c = Campaign.create(path, tmp_path / "c.sqlite")
    halt = c.run()
    assert halt.paused and halt.kind is HaltKind.INSTRUMENT_FAULT and halt.exit_code == 1
    assert halt.text.startswith("paused: instrument fault on trial 1")
    assert c.status()["status"] == "paused"
    assert [t.state for t in c.store.trials()] == ["abandoned"]
    c.close()


def test_two_stations_run_concurrently_and_see_each_other_as_pending(branin_protocol, tmp_path):
    path = branin_protocol(trials=8, options="stations: 2, noise_sd: 0.01")
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        c.run()
        trials = c.store.trials()
        assert {t.instrument for t in trials} == {"branin-1", "branin-2"}
        running_at = defaultdict(list)
        for e in c.store.events():
            if e["kind"] == "state" and e["to_state"] == "running":
                running_at[e["virtual_t"]].append(e["trial_id"])
        assert any(len(ids) == 2 for ids in running_at.values()), "no two trials ever ran at the same time"
        conds = [tuple(t.conditions.values()) for t in trials]
        assert len(set(conds)) == len(conds), "a pending point was proposed again"


def test_operator_accepts_edits_and_skips(branin_protocol, tmp_path):
    path = branin_protocol(trials=3, n_init=2, approval="every")
    # trial 1 accept; trial 2 edit outside the envelope (refused), then a legal edit; trial 3 skip;
    # trial 4 accept. Three results fill the budget.
    answers = io.StringIO("a\ne\nx1=99\ne\nx1=1.5 x2=2.5\ns\na\n")
    out = io.StringIO()
    with Campaign.create(path, tmp_path / "c.sqlite") as c:
        c.run(approver=TerminalApprover(c.protocol.to_problem(), answers, out))
        trials = c.store.trials()
        assert [t.state for t in trials] == ["measured", "measured", "rejected", "measured"]
        assert trials[1].conditions == {"x1": 1.5, "x2": 2.5}
        details = [e["detail"] for e in c.store.events(kinds=["approval"])]
        who = f"({getpass.getuser()} at the terminal)"
        assert details[0] == f"accepted by operator {who}"
        assert any(d.startswith("edit refused") for d in details)
        assert f"edited by operator {who}" in details and f"skipped by operator {who}" in details
        assert "edit refused" in out.getvalue()
        # Each time a proposal waits for the operator, the journal says where (and why an edit was refused).
        waits = c.store.events(kinds=["approval_wait"])
        assert [w["trial_id"] for w in waits] == [1, 2, 2, 3, 4]
        assert {w["data"]["where"] for w in waits} == {"terminal"}
        assert waits[2]["data"]["refusal"] and "x1" in waits[2]["data"]["refusal"]


def test_ctrl_c_pauses_cleanly_and_resume_finishes(branin_protocol, tmp_path):
    path = branin_protocol(trials=6, n_init=2, options="stations: 2")
    calls = {"n": 0}

    def interrupt_on_third_measurement(event: EngineEvent) -> None:
        if isinstance(event, TrialMeasured):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt

    c = Campaign.create(path, tmp_path / "c.sqlite")
    halt = c.run(on_event=interrupt_on_third_measurement)
    assert halt.paused and halt.kind is HaltKind.OPERATOR and halt.exit_code == 130
    info = c.status()
    assert info["status"] == "paused"
    # The trial still on the other station finished: nothing is left dispatched or running.
    assert not c.store.trials(states=["dispatched", "running"])
    c.close()
    with Campaign.open(tmp_path / "c.sqlite", writer=True) as c2:
        assert c2.resume().kind is HaltKind.BUDGET
        assert len(c2.store.trials(states=["measured"])) == 6
        events_consistent(c2.store)


def test_ask_and_tell_round_trip(branin_protocol, tmp_path):
    with Campaign.create(branin_protocol(trials=5), tmp_path / "c.sqlite") as c:
        asked = c.ask(2)
        assert [t.state for t in c.store.trials()] == ["dispatched", "dispatched"]
        (t1, _), (t2, _) = asked
        c.tell(t1, {"y": "3.25"})
        c.tell(t2, {}, failed=True)
        assert c.store.trial(t1).values == {"y": 3.25}
        assert c.store.trial(t2).state == "failed"
        # A third proposal sees both results and does not repeat them.
        (t3, cond3), = c.ask(1)
        assert cond3 not in [cond for _, cond in asked]


@pytest.mark.parametrize(
    "entry, message",
    [
        ((99, {"y": "1"}), "no such trial"),
        ((2, {"z": "1"}), "not a measured quantity"),
        ((2, {"y": "abc"}), "y="),
        ((2, {"y": "3 ns"}), "y="),
        ((2, {"y": "nan"}), "not a finite number"),
        ((2, {}), "missing a value"),
        ((1, {"y": "4"}), "appears twice"),
    ],
)
def test_tell_rejects_bad_input_and_changes_nothing(branin_protocol, tmp_path, entry, message):
    with Campaign.create(branin_protocol(), tmp_path / "c.sqlite") as c:
        c.ask(3)
        c.tell(3, {"y": "1.0"})
        before = ([(t.id, t.state, t.values) for t in c.store.trials()], len(c.store.events()))
        # The good first entry must not be recorded when a later one is bad.
        with pytest.raises(BadInput, match=message):
            c.tell_many([(1, {"y": "2.0"}, False), (entry[0], entry[1], False)])
        with pytest.raises(BadInput, match="already measured"):
            c.tell(3, {"y": "5"})
        after = ([(t.id, t.state, t.values) for t in c.store.trials()], len(c.store.events()))
        assert before == after


def test_a_recipe_the_driver_always_refuses_pauses_the_campaign_after_three(tmp_path):
    # The gate passes each proposal, but the instrument refuses it (its ramps cannot finish in time):
    # without a limit the engine would propose for ever, because refused trials are never results.
    protocol = paths.DATA / "mbe_ramp_too_fast.yaml"
    campaign = Campaign.create(protocol, tmp_path / "refused.sqlite", sim=True)
    try:
        halt = campaign.run(sim=True)
        assert halt.paused and halt.kind is HaltKind.ENVELOPE_REFUSALS
        assert "3 trials in a row refused by the instrument's envelope" in halt.text
        states = [t.state for t in campaign.store.trials()]
        refusals = [e for e in campaign.store.events() if e["kind"] == "safety_refusal"]
        assert campaign.status()["status"] == "paused"
    finally:
        campaign.close()
    assert states == ["abandoned"] * 3 and len(refusals) == 3
