"""What every proposal records about how it was made, so the decision can be audited and re-derived."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from closedloop.planners.space import Conditions, Observation


def _plain(value: Any) -> Any:
    """numpy scalars and the like -> their Python value, so hashing never depends on the array library."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"cannot serialise {value!r} ({type(value).__name__}) in planner provenance")


def data_hash(observations: Sequence[Observation], pending: Sequence[Conditions],
              pending_fidelities: Sequence[str | None] = ()) -> str:
    """sha256 of the canonical JSON of the observations and pending points the planner was given (and the
    pending points' sources, when any is named: the hashes of campaigns without fidelities are unchanged)."""
    # The fidelity enters only when set, so the hashes of campaigns without fidelities stay what they were.
    payload = {
        "observations": [
            {"conditions": o.conditions, "values": o.values, "failed": o.failed}
            | ({"fidelity": o.fidelity} if o.fidelity is not None else {})
            for o in observations
        ],
        "pending": list(pending),
    } | ({"pending_fidelities": list(pending_fidelities)} if any(f is not None for f in pending_fidelities) else {})
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """How one proposal was made.

    `design`: "initial" (the space-filling start), "model" (a model-based step), "fallback" (the model
    step could not run and a space-filling point was used; `fallback` says why), or the name of a
    model-free planner. `fidelity` is the source the planner chose to measure this proposal with (None:
    the problem has no fidelities) and `fidelity_reason` one sentence saying why. `seed` and `data_hash`
    (of the observations and pending points the planner was given) let an audit call the planner again
    and compare. `extra` keeps fields this version does not know, so a record read from an older or newer
    campaign file is written back unchanged.
    """

    planner: str
    planner_version: str | None = None
    seed: int | None = None
    data_hash: str | None = None
    n_observations: int = 0
    n_pending: int = 0
    design: str | None = None
    acquisition: str | None = None
    acquisition_value: float | None = None
    acquisition_settings: Mapping[str, Any] = field(default_factory=dict)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    fit_time_s: float = 0.0
    optimize_time_s: float = 0.0
    fallback: str | None = None
    fidelity: str | None = None  # the source chosen for this proposal (multi-fidelity); None: the target
    fidelity_reason: str | None = None  # why that source, in a sentence a user can read
    notes: Sequence[str] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def initial(self) -> bool:
        return self.design == "initial"

    @property
    def planning_s(self) -> float:
        return float(self.fit_time_s or 0.0) + float(self.optimize_time_s or 0.0)

    def with_fallback(self, why: str) -> Provenance:
        return replace(self, fallback=why)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as campaign files store it."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                out[f.name] = list(value) if f.name == "notes" else (dict(value) if isinstance(value, Mapping) else value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Provenance:
        """A stored record (of any closedloop version: missing fields take their defaults)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        given = {k: v for k, v in data.items() if k in known}
        if "planner_version" not in given and "version" in data:  # the earliest files said "version"
            given["planner_version"] = data["version"]
        given.setdefault("planner", "")
        if given.get("seed") is not None:
            given["seed"] = int(given["seed"])
        given["notes"] = tuple(given.get("notes") or ())
        extra = {k: v for k, v in data.items() if k not in known and k != "version"}
        return cls(**given, extra=extra)


@dataclass(frozen=True)
class Proposal:
    """A point to run, and why (`provenance`), so the decision can be re-derived and audited."""

    conditions: Conditions
    provenance: Provenance


def base_provenance(
    planner: str, version: str, seed: int, observations: Sequence[Observation], pending: Sequence[Conditions],
    pending_fidelities: Sequence[str | None] = (),
) -> Provenance:
    """The fields every proposal's provenance carries; model-based planners fill in the model fields."""
    return Provenance(
        planner=planner,
        planner_version=version,
        seed=int(seed),
        data_hash=data_hash(observations, pending, pending_fidelities),
        n_observations=len(observations),
        n_pending=len(pending),
    )


def check_request(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"number of proposals must be a non-negative int, got {n!r}")
