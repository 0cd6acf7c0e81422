"""Planners by name, as a protocol file names them: `make_planner("botorch", n_initial=8)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from closedloop.planners.base import Planner
from closedloop.planners.options import checked_options


def _sobol() -> Callable[..., Planner]:
    from closedloop.planners.sobol import SobolPlanner

    return SobolPlanner


def _random() -> Callable[..., Planner]:
    from closedloop.planners.sobol import RandomPlanner

    return RandomPlanner


def _botorch() -> Callable[..., Planner]:
    from closedloop.planners.botorch_planner import BotorchPlanner  # torch and BoTorch: seconds to import

    return BotorchPlanner


def _multifidelity() -> Callable[..., Planner]:
    from closedloop.planners.multifidelity import MultiFidelityPlanner

    return MultiFidelityPlanner


# Each planner's class is imported when a planner of that name is made: a command that does not plan
# (validate, status, tell) never loads torch.
PLANNERS: dict[str, Callable[[], Callable[..., Planner]]] = {
    "sobol": _sobol,
    "random": _random,
    "botorch": _botorch,
    "multifidelity": _multifidelity,
}


def planner_options(name: str) -> dict[str, Any]:
    """The options a planner accepts and their defaults (for docs, validation and error messages)."""
    factory = _factory(name)
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    }


# Defaults a planner version changed: {(planner, version): {option: that version's default}}, for the
# options whose default changed in the next version. Replays rebuild a recorded call with the defaults
# of the version that made it: those of its own entry and of every later version's entry.
OLD_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    # Version 2 models failed samples with a GP classifier and pads them into the objective models.
    ("botorch", "1"): {"feasibility": "regression", "pad_failures": False},
    # Version 3 screens large pools for qLogNEI and may take a random forest on wide pools. (It also
    # drops constant and duplicated pool columns, which no option undoes: a replay of a version-2 pool
    # call over such a table can differ; over a table without them it is the same.)
    # Version 3 also models with kernel "auto" by default (Matern-5/2 unless the problem has outcome
    # constraints or choice parameters), hyperparameters fitted on at most 300 points (a Matern fit takes ~4x the RBF's L-BFGS
    # iterations: a proposal at n = 1000 took 4.8 s fitting on 500 points, 2.1 s on 300).
    ("botorch", "2"): {"surrogate": "gp", "pool_screen": 0, "kernel": "rbf", "max_fit_points": 500},
}


def options_as_of(name: str, version: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """`options` for rebuilding planner `name` as recorded `version` was: its old defaults, unless set."""
    old: dict[str, Any] = {}
    for (planner, changed), defaults in OLD_DEFAULTS.items():
        if planner == name and _at_or_before(str(version), changed):
            old = {**defaults, **old}  # an earlier version's own entry wins over a later one's
    return {**old, **options}


def _at_or_before(version: str, changed: str) -> bool:
    """True when `version` is `changed` or older (numeric versions; an unknown one is never older)."""
    try:
        return int(version) <= int(changed)
    except ValueError:
        return version == changed


def make_planner(name: str, **options: Any) -> Planner:
    """A planner by name. Unknown names or options raise ValueError listing what is accepted."""
    factory = _factory(name)
    accepted = planner_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise ValueError(f"planner {name!r} has no option(s) {unknown}; it accepts: {listing}")
    return factory(**checked_options(name, options))


def _factory(name: str) -> Callable[..., Planner]:
    try:
        return PLANNERS[name]()
    except KeyError:
        raise ValueError(f"unknown planner {name!r}; choose one of {sorted(PLANNERS)}") from None
