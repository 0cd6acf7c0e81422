"""The operator as the engine sees them: who approves proposals, confirms manual steps and answers a
driver's questions (the results of an instrument run by hand), and who may pause, resume or abort a running
campaign from elsewhere.

The terminal (`controller.cli.approval`), a dry run's stand-in and the dashboard
(`controller.engine.remote`) implement these.
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
    by: str = ""  # who decided, as the journal names them ("alice on the dashboard from 127.0.0.1")


class Approver(Protocol):
    """Sees each proposal that needs approval and decides. `error` says why the previous edit was refused
    (the same proposal is asked about again). `where` names where the operator answers ("terminal",
    "dashboard"): the journal says where a proposal waits for a decision."""

    where: str

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


@dataclass(frozen=True)
class OperatorRequest:
    """A request to the running campaign from an operator who is not at its terminal: `pause` (no new
    trial starts; those running finish), `resume`, or `abort` (what Ctrl-C does: the trials running are
    stopped, every instrument goes safe, the campaign pauses and `closedloop resume` continues it)."""

    action: Literal["pause", "resume", "abort"]
    by: str


class OperatorControl(Protocol):
    """Where the running engine looks for pause, resume and abort requests, between trials and while it
    waits for them."""

    def requests(self) -> list[OperatorRequest]:
        """The requests that arrived since the last call, oldest first. Cheap enough to call on every turn
        of the engine's loop (it looks at most every fraction of a second)."""
        ...

    def wait(self) -> None:
        """Block for about one look's interval: the engine is paused and idle."""
        ...


class AbortRequested(Exception):
    """An operator asked from elsewhere (the dashboard) to abort the campaign while it waited for them."""

    def __init__(self, by: str) -> None:
        super().__init__(f"aborted by {by}")
        self.by = by
