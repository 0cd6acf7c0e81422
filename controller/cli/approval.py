"""The operator at a terminal: accept, edit or skip each proposal (`closedloop run --approve`), confirm
a manual step, answer a driver's questions (the values of an instrument run by hand).

Reads plain lines from stdin so a session can be scripted (tests pipe the answers in); writes to stderr,
so stdout keeps only results.
"""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from closedloop.controller.engine.operator import Decision, OperatorAbsent
from closedloop.planners.space import Conditions, Problem
from closedloop.records import Value


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "the operator"


def _coerce(text: str, current: object) -> Value:
    """Parse an edited value like the proposed one: int stays int, float stays float, choices stay text."""
    if isinstance(current, bool | str):
        return text
    if isinstance(current, int):
        return int(text)
    return float(text)


class TerminalApprover:
    where = "terminal"

    def __init__(self, problem: Problem, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.problem = problem
        self.who = f"{_user()} at the terminal"  # the journal names who decided
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stderr

    def _say(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def _read(self, prompt: str, waiting_for: str = "a decision") -> str:
        self._say(prompt)
        line = self.stdin.readline()
        if not line:
            # End of input: nobody is there to decide. Pause rather than guess; nothing is sent.
            raise OperatorAbsent(f"standard input closed while waiting for {waiting_for}")
        return line.strip()

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision:
        if error:
            self._say(f"edit refused: {error}")
        self._say(f"trial {trial_id} proposed:")
        for name, value in conditions.items():
            self._say(f"  {name} = {value!r}")
        while True:
            answer = self._read("[a]ccept, [e]dit, [s]kip? ").lower()
            if answer in ("a", "accept", "y", "yes"):
                return Decision("accept", by=self.who)
            if answer in ("s", "skip", "n", "no"):
                return Decision("skip", note="skipped at the terminal", by=self.who)
            if answer in ("e", "edit"):
                line = self._read("new values as name=value ...: ")
                try:
                    edits: Conditions = {}
                    for pair in line.split():
                        name, _, raw = pair.partition("=")
                        if name not in conditions:
                            raise ValueError(f"unknown parameter {name!r}")
                        edits[name] = _coerce(raw, conditions[name])
                except ValueError as exc:
                    self._say(f"could not read that: {exc}")
                    continue
                return Decision("edit", conditions=edits, note=line, by=self.who)
            self._say("answer a, e or s")

    def confirm_step(self, trial_id: int, message: str) -> None:
        self._read(f"trial {trial_id}: {message} - press Enter when done", "the operator to confirm a step")

    def answer_question(self, trial_id: int, question: str) -> str:
        return self._read(question, f"the operator's answer (trial {trial_id}: {question.splitlines()[-1]})")
