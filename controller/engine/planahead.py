"""Planning while the instruments work: one planner call at a time on a worker thread (live campaigns).

On the wall clock a model fit and an acquisition optimization take seconds; made on the engine's thread
they would hold every station whose step ended meanwhile (the engine thread is the one that moves
samples on). The engine asks for the next proposal as soon as a sample enters the line, so it is ready
when the first step's station frees; the worker only computes (`planner.propose` is a pure function of
its inputs), and everything stored and journaled is written by the engine thread when it takes the result.
In virtual time planning costs no instrument time, and the engine plans in line, deterministically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from closedloop.planners.provenance import Proposal
from closedloop.planners.space import Conditions, Observation


@dataclass(frozen=True)
class PlanRequest:
    """What a planner call is made from, taken on the engine thread."""

    observations: list[Observation]
    pending: list[Conditions]
    n: int
    seed: int
    origin: str | None = None
    pending_fidelities: list[str | None] = field(default_factory=list)  # with fidelities: each pending point's source


@dataclass
class PlanOutcome:
    request: PlanRequest
    proposals: Sequence[Proposal] = ()
    error: Exception | None = None  # the planner raised: the engine falls back and journals why
    seconds: float = 0.0


@dataclass
class PlanAhead:
    """At most one planner call in flight; `take()` hands its outcome to the engine thread once."""

    _thread: threading.Thread | None = None
    _outcome: PlanOutcome | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    total_s: float = 0.0  # planner time spent on the worker: what planning in line would have held stations

    @property
    def busy(self) -> bool:
        """A call is running or its outcome has not been taken."""
        return self._thread is not None

    def start(self, request: PlanRequest, propose: Callable[[PlanRequest], Sequence[Proposal]]) -> None:
        if self.busy:
            raise RuntimeError("a planner call is already in flight")
        self._done.clear()

        def work() -> None:
            started = time.perf_counter()
            outcome = PlanOutcome(request)
            try:
                outcome.proposals = propose(request)
            except Exception as exc:  # noqa: BLE001 - handed to the engine thread, which falls back and journals it
                outcome.error = exc
            outcome.seconds = time.perf_counter() - started
            self._outcome = outcome
            self._done.set()

        # A daemon: a campaign that pauses mid-fit exits at once; the result is not needed any more.
        self._thread = threading.Thread(target=work, name="planner", daemon=True)
        self._thread.start()

    def take(self, timeout: float | None = 0.0) -> PlanOutcome | None:
        """The finished call's outcome (once), or None while it runs (after waiting up to `timeout`)."""
        if self._thread is None or not self._done.wait(timeout):
            return None
        outcome, self._outcome, self._thread = self._outcome, None, None
        assert outcome is not None
        self.total_s += outcome.seconds
        return outcome


__all__ = ["PlanAhead", "PlanOutcome", "PlanRequest"]
