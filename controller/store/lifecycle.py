"""The life of a trial: its states, the moves between them, and what a trial may be made of.

    proposed -> approved | rejected | abandoned
    approved -> dispatched | abandoned
    dispatched -> running | measured | failed | abandoned
    running -> measured | failed | abandoned
    measured, failed, abandoned, rejected: final

"failed" is a failed sample (data for the planner); an instrument fault ends the attempt as "abandoned"
and a retry is a new trial; "rejected" is a refusal by the safety gate or the operator.
"""

from __future__ import annotations

import json
from typing import Any

from closedloop.controller.store.errors import InvalidTransition

STATES = ("proposed", "approved", "dispatched", "running", "measured", "failed", "abandoned", "rejected")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "proposed": ("approved", "rejected", "abandoned"),
    "approved": ("dispatched", "abandoned"),
    "dispatched": ("running", "measured", "failed", "abandoned"),
    "running": ("measured", "failed", "abandoned"),
    "measured": (),
    "failed": (),
    "abandoned": (),
    "rejected": (),
}
FINAL_STATES = tuple(state for state, moves in TRANSITIONS.items() if not moves)
# A trial may be born approved (approval: none), rejected (refused by the safety gate before dispatch) or
# dispatched (warm-start data measured outside the loop, recorded right after).
INITIAL_STATES = ("proposed", "approved", "dispatched", "rejected")
# Reached only together with a recorded measurement, so a result state never exists without its data.
MEASUREMENT_STATES = ("measured", "failed")
ORIGINS = ("initial", "planner", "manual", "retry", "warm_start")


def check_transition(trial_id: int, from_state: str, to_state: str) -> None:
    """Raise InvalidTransition unless the lifecycle allows from_state -> to_state."""
    if to_state not in STATES:
        raise InvalidTransition(f"unknown trial state {to_state!r}; states are {list(STATES)}")
    allowed = TRANSITIONS[from_state]
    if to_state not in allowed:
        reason = f"allowed: {list(allowed)}" if allowed else f"{from_state} is final"
        raise InvalidTransition(f"trial {trial_id}: {from_state} -> {to_state} is not allowed ({reason})")


def check_new_trial(state: str, origin: str, proposer: str, retry_of: int | None) -> None:
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r} is not one of {list(ORIGINS)}")
    if state not in INITIAL_STATES:
        raise InvalidTransition(f"a new trial cannot start as {state!r}; it starts as one of {list(INITIAL_STATES)}")
    if not proposer:
        raise ValueError("proposer must name who proposed the trial (planner name, 'operator', ...)")
    if (origin == "retry") != (retry_of is not None):
        raise ValueError("a retry needs origin='retry' and retry_of=<the abandoned trial's id>, both or neither")


def to_json(value: Any, what: str, *, finite: bool = False) -> str:
    """JSON text; numpy scalars become plain numbers.

    Records (provenance, event data) may hold a -inf acquisition value and must not crash a campaign, so
    NaN/Infinity are written as Python's JSON does; `finite=True` refuses them (conditions).
    """
    try:
        return json.dumps(value, allow_nan=not finite, default=_plain)
    except (TypeError, ValueError) as exc:
        qualifier = " with finite numbers" if finite else ""
        raise ValueError(f"{what} must be JSON-serializable{qualifier}: {exc}") from None


def conditions_json(conditions: dict) -> str:
    """The stored form of one point of the search space; refuses anything a protocol could not declare."""
    if not isinstance(conditions, dict) or not conditions:
        raise ValueError(f"conditions must be a non-empty dict of parameter name -> value, got {conditions!r}")
    for name, value in conditions.items():
        plain = _plain(value) if hasattr(value, "item") else value
        if not isinstance(name, str) or not isinstance(plain, str | int | float):
            raise ValueError(f"condition {name!r}={value!r}: names are strings, values numbers or strings")
    return to_json(conditions, "conditions", finite=True)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars from a planner
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
