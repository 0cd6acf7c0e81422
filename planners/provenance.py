"""What every proposal records about how it was made, so the decision can be audited and re-derived."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from closedloop.planners.space import Conditions, Observation


def _plain(value: Any) -> Any:
    """numpy scalars and the like -> their Python value, so hashing never depends on the array library."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"cannot serialise {value!r} ({type(value).__name__}) in planner provenance")


def data_hash(observations: Sequence[Observation], pending: Sequence[Conditions]) -> str:
    """sha256 of the canonical JSON of the observations and pending points the planner was given."""
    payload = {
        "observations": [
            {"conditions": o.conditions, "values": o.values, "failed": o.failed} for o in observations
        ],
        "pending": list(pending),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def base_provenance(
    planner: str, version: str, seed: int, observations: Sequence[Observation], pending: Sequence[Conditions]
) -> dict[str, Any]:
    """The fields every Proposal.provenance carries; model-based planners fill in the model fields."""
    return {
        "planner": planner,
        "planner_version": version,
        "seed": int(seed),
        "data_hash": data_hash(observations, pending),
        "n_observations": len(observations),
        "n_pending": len(pending),
        "acquisition": None,
        "acquisition_value": None,
        "hyperparameters": {},
        "fit_time_s": 0.0,
        "optimize_time_s": 0.0,
        "fallback": None,
    }


def check_request(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"number of proposals must be a non-negative int, got {n!r}")
