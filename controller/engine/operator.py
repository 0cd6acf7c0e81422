"""The operator as the engine sees them: who approves proposals, confirms manual steps and answers a
driver's questions (the results of an instrument run by hand).

The terminal (`controller.cli.approval`), a dry run's stand-in and, later, the dashboard implement these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from closedloop.records import Conditions


@dataclass(frozen=True)
class Decision:
    """The operator's answer to one proposal: accept it, edit some values (re-checked by the safety gate),
    or skip it."""

    action: Literal["accept", "edit", "skip"]
    conditions: Conditions | None = None
    note: str = ""


class Approver(Protocol):
    """Sees each proposal that needs approval and decides. `error` says why the previous edit was refused
    (the same proposal is asked about again)."""

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision: ...


@runtime_checkable
class StepConfirmer(Protocol):
    """An operator who can be asked to do a manual step (load a sample) and confirm it; blocks until done."""

    def confirm_step(self, trial_id: int, message: str) -> None: ...


@runtime_checkable
class QuestionAnswerer(Protocol):
    """An operator a driver can ask a question during a trial (a value measured by hand): `question` is
    shown (its last line is what to answer) and their one-line answer returned as typed. Blocks until
    answered; raises `OperatorAbsent` when nobody can answer (the input closed)."""

    def answer_question(self, trial_id: int, question: str) -> str: ...


class OperatorAbsent(Exception):
    """The operator's input closed while a decision was needed: the campaign pauses rather than guess."""
