"""`ask` respects the campaign: the stop rules (exit 1 with the rule, unless --force), trials handed out
earlier and still waiting are offered again before new ones (--new for more), and an initial-design point
abandoned without a result comes back before the design moves on. Through the CLI and the Python API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign, CampaignOver
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.halts import HaltKind
from closedloop.drivers.base import InstrumentFault
from tests.controller.cli.campaigns import invoke, refused, stored
from tests.controller.engine.test_driver_call_sites import FaultyInstrument

# ---- the stop rules ---------------------------------------------------------------------------------


def _tell_all(db: Path, values: list[float]) -> None:
    if not values:
        return
    with Campaign.open(db, writer=True) as c:
        for offer, y in zip(c.ask(len(values)), values, strict=True):
            c.tell(offer.trial, {"y": y})


@pytest.mark.parametrize(("knobs", "told", "kind", "reason"), [
    ({"trials": 2}, [5.0, 6.0], HaltKind.BUDGET, "budget: 2 of 2 trials done"),
    ({"target": 1.0}, [5.0, 0.5], HaltKind.TARGET, "target reached: y"),
    ({"stop": "no_improvement: 2"}, [1.0, 2.0, 3.0], HaltKind.NO_IMPROVEMENT, "no improvement in the last 2 trials"),
    ({"wall": "0.001 s"}, [], HaltKind.WALL_TIME, "wall time:"),
], ids=["budget", "target", "no_improvement", "wall_time"])
def test_ask_after_a_stop_rule_fired_says_which_and_exits_1_unless_forced(
    branin_protocol: Callable[..., Path], tmp_path: Path, knobs: dict, told: list[float], kind: HaltKind, reason: str
) -> None:
    db = tmp_path / "c.sqlite"
    Campaign.create(branin_protocol(**knobs), db).close()
    _tell_all(db, told)
    before = stored(db)
    result = invoke("ask", db, "-n", 1)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    assert result.stderr.startswith("error: the campaign's stop rule fired (") and result.stderr.count("\n") == 1
    assert reason in result.stderr and "--force" in result.stderr
    assert stored(db) == before  # nothing was handed out or journaled
    with Campaign.open(db, writer=True) as c, pytest.raises(CampaignOver) as refusal:
        c.ask(1)
    assert refusal.value.halt.kind is kind
    forced = invoke("ask", db, "-n", 2, "--force", "--format", "json")
    assert forced.exit_code == 0, forced.output
    assert [row["trial"] for row in json.loads(forced.stdout)] == [len(told) + 1, len(told) + 2]


def test_ask_refuses_an_n_past_what_the_budget_has_left_and_counts_pending_trials_offered_again(
    branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "b.sqlite"
    Campaign.create(branin_protocol(trials=5), db).close()
    refused(invoke("ask", db, "-n", 10000), "-n 10000", "5 trials left", "budget of 5", "-n 5", "--force")
    refused(invoke("ask", db, "-n", 0), "-n must be at least 1")
    assert stored(db)[0] == []
    assert invoke("ask", db, "-n", 3).exit_code == 0
    assert invoke("tell", db, "--trial", 1, "y=2.5").exit_code == 0
    # 5 - 1 told - 2 pending leaves room for 2 new: the 2 pending come again, so -n 4 fits and -n 5 does not.
    refused(invoke("ask", db, "-n", 5), "-n 5", "2 pending trials offered again", "2 trials left", "1 result told",
            "at most 4")
    refused(invoke("ask", db, "--new", "-n", 3), "--new -n 3", "2 trials left", "at most 2")
    assert len(stored(db)[0]) == 3
    assert invoke("ask", db, "--new", "-n", 2).exit_code == 0  # trials 4 and 5: the budget is taken
    before = stored(db)
    refused(invoke("ask", db, "--new", "-n", 1), "no trials left in the budget of 5", "1 result told, 4 pending",
            "without --new")
    assert stored(db) == before
    again = invoke("ask", db, "-n", 4, "--format", "csv")  # the 4 pending ones, nothing new
    assert again.exit_code == 0, again.output
    assert [line.split(",")[0] for line in again.stdout.splitlines()[1:]] == ["2", "3", "4", "5"]
    assert invoke("ask", db, "--new", "-n", 1, "--force").exit_code == 0  # past the budget, deliberately
    assert len(stored(db)[0]) == 6


# ---- pending trials come first ----------------------------------------------------------------------


def test_pending_trials_are_offered_again_before_new_ones(branin_protocol: Callable[..., Path], tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    Campaign.create(branin_protocol(trials=8), db).close()
    first = invoke("ask", db, "-n", 2, "--format", "json")
    assert first.exit_code == 0 and first.stderr == ""
    again = invoke("ask", db, "-n", 2, "--format", "json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(first.stdout)  # the same trials, the same conditions
    assert "trial 1: offered again: handed out before, no result told yet" in again.stderr
    assert "trial 2: offered again" in again.stderr and "--new" in again.stderr
    assert len(stored(db)[0]) == 2

    table = invoke("ask", db, "-n", 3)  # both pending, then one new trial
    assert [line.split(":")[0] for line in table.stdout.splitlines()] == ["trial 1", "trial 2", "trial 3"]
    assert "trial 3: offered again" not in table.stderr

    more = invoke("ask", db, "-n", 2, "--new", "--format", "json")
    assert [row["trial"] for row in json.loads(more.stdout)] == [4, 5] and more.stderr == ""
    with Campaign.open(db, writer=True) as c:
        # The planner saw the pending trials: the new points repeat none of them.
        pending = [t.conditions for t in c.store.trials() if t.id <= 3]
        assert all(row not in pending for row in [{k: v for k, v in r.items() if k != "trial"}
                                                   for r in json.loads(more.stdout)])
        c.tell(1, {"y": 3.0})
        offers = c.ask(2)  # Python: the same rule, and each offer says why it comes again
        assert [(o.trial, o.again is not None) for o in offers] == [(2, True), (3, True)]
        (trial, conditions), _ = offers  # an offer unpacks as (trial, conditions)
        assert trial == 2 and conditions == c.store.trial(2).conditions


# ---- abandoned initial-design points come back --------------------------------------------------------


def _always_faulting() -> Station:
    return Station("faulty", FaultyInstrument("run", lambda: InstrumentFault("no reply to *IDN?")), virtual=True)


def _abandon_first_point(protocol: Path, db: Path) -> dict:
    """Run on an instrument that never answers: trial 1 (the first initial-design point) and its retry are
    abandoned, and the campaign pauses (on_fault: pause). Returns that point."""
    with Campaign.create(protocol, db) as c:
        halt = c.run_with([_always_faulting()], gate=protocol_gate(c.protocol))
        assert halt.kind is HaltKind.INSTRUMENT_FAULT
        assert [(t.id, t.state, t.origin) for t in c.store.trials()] == [
            (1, "abandoned", "initial"), (2, "abandoned", "retry")]
        return c.store.trial(1).conditions


def test_ask_offers_an_abandoned_initial_design_point_again(branin_protocol: Callable[..., Path], tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    point = _abandon_first_point(branin_protocol(trials=6, retries=1, on_fault="pause"), db)
    result = invoke("ask", db, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"trial": 3, **point}]
    assert "trial 3: offered again: initial-design point of trial 1, abandoned (fault: no reply to *IDN?)" in result.stderr
    with Campaign.open(db) as c:
        (event,) = c.store.events(kinds=["reoffer"])
        assert (event["trial_id"], event["data"]) == (3, {"of_trial": 2})
        assert c.store.proposal(3).provenance.design == "initial"  # the report shows it as the design's point
    # Still pending: the next ask offers it as such, not a new point and not the abandoned one once more.
    assert json.loads(invoke("ask", db, "--format", "json").stdout) == [{"trial": 3, **point}]
    assert invoke("tell", db, "--trial", 3, "y=4.2").exit_code == 0
    nxt = json.loads(invoke("ask", db, "--format", "json").stdout)
    assert nxt[0]["trial"] == 4 and {k: v for k, v in nxt[0].items() if k != "trial"} != point


def test_run_offers_an_abandoned_initial_design_point_again_once_and_deterministically(
    branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    protocol = branin_protocol(trials=5, retries=1, on_fault="pause")
    sequences = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.sqlite"
        point = _abandon_first_point(protocol, db)
        with Campaign.open(db, writer=True) as c:
            assert c.resume(sim=True).kind is HaltKind.BUDGET
            trials = c.store.trials()
            (event,) = c.store.events(kinds=["reoffer"])
        assert (trials[2].id, trials[2].origin, trials[2].state, trials[2].conditions) == (3, "initial", "measured", point)
        assert event["trial_id"] == 3 and "initial-design point of trial 1" in event["detail"]
        sequences.append([t.conditions for t in trials])
    assert sequences[0] == sequences[1]  # the same file, the same re-offer and the same design after it

    # Abandoned a second time, the point is given up: the design moves on instead of retrying it forever.
    db = tmp_path / "twice.sqlite"
    point = _abandon_first_point(protocol, db)
    with Campaign.open(db, writer=True) as c:
        c.run_with([_always_faulting()], gate=protocol_gate(c.protocol))
        assert [t.conditions == point for t in c.store.trials()] == [True] * 4
        assert c.resume(sim=True).kind is HaltKind.BUDGET
        assert c.store.trial(5).conditions != point and c.store.trial(5).origin == "initial"
        assert len(c.store.events(kinds=["reoffer"])) == 1


def test_resume_keeps_trials_handed_out_with_ask_for_tell_and_pauses_when_they_fill_the_budget(
    branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    """A person took two trials of an instrument campaign to run by hand: `resume` runs the instrument on
    the rest of the budget without abandoning theirs, pauses (exit 1) saying whose results it waits for,
    and the person's `tell` then lands on the trials they were given."""
    db = tmp_path / "c.sqlite"
    Campaign.create(branin_protocol(trials=4, n_init=4), db).close()
    assert invoke("ask", db, "-n", 2).exit_code == 0
    result = invoke("resume", db, "--sim", "--no-report")
    assert result.exit_code == 1, result.output
    assert ("paused: the rest of the budget is taken by 2 trial(s) handed out with ask (1, 2); record their "
            "results with closedloop tell, then resume") in result.stderr
    trials, _ = stored(db)
    assert [(t, state) for t, state, _ in trials] == [(1, "dispatched"), (2, "dispatched"), (3, "measured"), (4, "measured")]
    assert invoke("tell", db, "--trial", 1, "y=4.0").exit_code == 0
    assert invoke("tell", db, "--trial", 2, "y=5.0").exit_code == 0
    with Campaign.open(db) as c:
        assert c.status()["results"] == 4
