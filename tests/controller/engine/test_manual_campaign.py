"""A campaign measured by hand through the Python API: create -> ask -> tell -> status -> report, and `run`
with an operator object answering the manual driver's questions on the engine's thread (issue 20)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.engine.operator import Decision, OperatorAbsent
from closedloop.controller.report.html import write_report
from closedloop.planners.space import Conditions
from tests import paths

MANUAL = paths.PROTOCOLS / "manual_spin_coating.yaml"


def small(tmp_path: Path, trials: int) -> Path:
    """The shipped manual protocol with a budget of `trials`, all from the initial design (no GP fits)."""
    text = MANUAL.read_text().replace("budget: {trials: 15}", f"budget: {{trials: {trials}}}")
    path = tmp_path / "manual.yaml"
    path.write_text(text.replace("n: 5}", f"n: {trials}}}"))
    return path


class ScriptedOperator:
    """Answers the driver's questions from a script, noting the thread each question reached it on."""

    where = "test script"

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.threads: set[str] = set()

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision:
        raise AssertionError("an approval: none protocol asks for no decision")

    def answer_question(self, trial_id: int, question: str) -> str:
        self.threads.add(threading.current_thread().name)
        if not self.answers:
            raise OperatorAbsent("the script ran out")
        return self.answers.pop(0)


def test_init_ask_tell_status_report_from_python(tmp_path: Path) -> None:
    db = tmp_path / "films.sqlite"
    with Campaign.create(MANUAL, db) as c:
        (first, conditions), (second, _) = c.ask(2)
        assert set(conditions) == {"spin_speed", "anneal_temp", "concentration"}
        c.tell(first, {"roughness": "2.4 nm", "thickness": 0.31e3}, note="slight comet streak")
        c.tell(second, {}, failed=True, note="film dewetted")
        status = c.status()
        assert (status["counts"], status["results"], status["budget"]) == ({"measured": 1, "failed": 1}, 2, 15)
        assert status["best"]["values"] == {"roughness": 2.4}
        assert c.store.trial(first).values == {"roughness": 2.4, "thickness": 310.0}  # measured, not optimized
        assert c.store.trial(second).detail == "film dewetted"
    page = write_report(db, tmp_path / "films.html").read_text()
    assert "slight comet streak" in page and "film dewetted" in page


def test_run_asks_the_operator_on_the_engines_thread_and_stores_each_result(tmp_path: Path) -> None:
    operator = ScriptedOperator(["2.4", "310 nm", "", "f", "cracked"])
    with Campaign.create(small(tmp_path, 2), tmp_path / "films.sqlite") as c:
        halt = c.run(approver=operator)
        trials = c.store.trials()
    assert (halt.kind, halt.exit_code) == (HaltKind.BUDGET, 0)
    assert [(t.state, t.values, t.detail) for t in trials] == [
        ("measured", {"roughness": 2.4, "thickness": 310.0}, "entered by the operator"),
        ("failed", {}, "cracked"),
    ]
    # The trials ran in worker threads; the operator was asked on the thread that owns the terminal.
    assert operator.threads == {threading.main_thread().name}


@pytest.mark.parametrize("operator", [None, ScriptedOperator(["2.4"])], ids=["no operator", "input ends"])
def test_run_without_an_answer_pauses_and_keeps_nothing_half_entered(
    tmp_path: Path, operator: ScriptedOperator | None
) -> None:
    with Campaign.create(small(tmp_path, 2), tmp_path / "films.sqlite") as c:
        halt = c.run(approver=operator)
        trials = c.store.trials()
    assert (halt.kind, halt.paused, halt.exit_code) == (HaltKind.OPERATOR_ABSENT, True, 130)
    assert [(t.state, t.values, t.origin) for t in trials] == [("abandoned", {}, "initial"), ("proposed", {}, "retry")]
    if operator is None:
        assert "needs an operator to answer 'roughness [nm]?'" in halt.reason
