"""The planner interface: a pure function of (problem, observations, pending)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from closedloop.planners.provenance import Proposal
from closedloop.planners.space import Conditions, Observation, Problem

if TYPE_CHECKING:
    import pandas as pd  # for annotations only: importing it costs a third of a second


class Planner(Protocol):
    """Proposes the next experiments. Pure: no I/O, no clock, no hidden state between calls.

    The same arguments (including `seed`) give the same proposals, bit for bit, on one machine.
    `pending` are conditions already dispatched but not yet measured; a planner must not propose
    them again and should spread a batch away from them. `candidates`, when given, is pool mode:
    every proposal must be a row of that table (by parameter columns) not already observed or pending.
    `pending_fidelities`, for a problem with fidelities, names the source each pending point is being
    measured by (aligned with `pending`; None: the target); empty when unknown. Other planners ignore it.
    """

    name: str
    version: str

    def propose(
        self,
        problem: Problem,
        observations: Sequence[Observation],
        pending: Sequence[Conditions],
        n: int,
        seed: int,
        candidates: pd.DataFrame | None = None,
        pending_fidelities: Sequence[str | None] = (),
    ) -> list[Proposal]: ...
