"""Why a campaign stopped or paused, as a record: what `run` returns, what the CLI turns into an exit code,
and (as its `text`) the stop reason the campaign file stores.

The stored texts are the ones closedloop has always written, so campaign files stay comparable across
versions; code decides on `kind` and `paused`, never on the words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class HaltKind(Enum):
    # A stop rule of the protocol: the campaign ended as planned.
    BUDGET = "budget"
    WALL_TIME = "wall time"
    TARGET = "target reached"
    NO_IMPROVEMENT = "no improvement"
    # The campaign cannot go on as it is: a person should look.
    NOTHING_TO_PROPOSE = "nothing to propose"
    GATE_REFUSALS = "safety gate refusals"
    ENVELOPE_REFUSALS = "envelope refusals"
    INSTRUMENT_FAULT = "instrument fault"
    NO_RESULTS = "no results"
    WAITING_FOR_RESULTS = "waiting for results"  # the budget is taken up by trials handed out with `ask`
    # The operator.
    OPERATOR = "operator"
    OPERATOR_ABSENT = "operator absent"


RULES = frozenset({HaltKind.BUDGET, HaltKind.WALL_TIME, HaltKind.TARGET, HaltKind.NO_IMPROVEMENT})

EXIT_OK, EXIT_FAILED, EXIT_PAUSED_BY_OPERATOR = 0, 1, 130


@dataclass(frozen=True)
class Halt:
    """A campaign's end (`paused=False`, stopped for good) or pause (`resume` continues it)."""

    kind: HaltKind
    paused: bool
    reason: str  # what happened, for people: "budget: 40 of 40 trials done", "instrument fault on trial 3: ..."

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        """The stop reason as campaign files store it: a stop rule's reason as it is, the operator's
        pause as it is, anything else prefixed with "stopped: " or "paused: "."""
        if self.by_rule or self.by_operator:
            return self.reason
        return f"{'paused' if self.paused else 'stopped'}: {self.reason}"

    @property
    def headline(self) -> str:
        """One line for a terminal: "stopped: budget: 40 of 40 trials done", "paused: operator ..."."""
        return f"{'paused' if self.paused else 'stopped'}: {self.reason}"

    @property
    def by_rule(self) -> bool:
        """A stop rule ended it: the campaign did what the protocol asked."""
        return self.kind in RULES and not self.paused

    @property
    def by_operator(self) -> bool:
        return self.kind in (HaltKind.OPERATOR, HaltKind.OPERATOR_ABSENT)

    @property
    def exit_code(self) -> int:
        """0 a stop rule ended it, 130 the operator paused it, 1 anything else (a failure, or a pause
        because of one)."""
        if self.by_rule:
            return EXIT_OK
        return EXIT_PAUSED_BY_OPERATOR if self.by_operator else EXIT_FAILED


def stopped(kind: HaltKind, reason: str) -> Halt:
    return Halt(kind, paused=False, reason=reason)


def paused(kind: HaltKind, reason: str) -> Halt:
    return Halt(kind, paused=True, reason=reason)
