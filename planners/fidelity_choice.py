"""Which source measures the next point: target-variance reduction per instrument-hour, with guards.

At the conditions the acquisition chose, each source is scored by the fraction of the target's posterior
variance there that one measurement of it would remove (`MultiTaskFit.variance_removed`), divided by its
cost in hours. Proxies help only through the learned correlation, so an uninformative proxy scores ~0 by
itself; two guards keep the target from starving where that estimate cannot be trusted yet (the known
failure of cost-aware multi-fidelity BO is never leaving the cheap source, Ax issue #475):

- a proxy whose learned correlation with the target is below `min_correlation` is not measured at all;
- once `proxy_share` x (the target's cost) hours have gone to proxies since the last target result, the
  target is measured: proxies can at most add that share to the hours the target gets. When a target
  measurement is already in flight (a device a day in the making), nothing is proposed instead: the line
  waits for it rather than spend more on proxies or start another target measurement the proxies did not
  ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from closedloop.planners.fidelities import Sources
from closedloop.planners.multitask_model import MultiTaskFit
from closedloop.planners.space import Fidelity


@dataclass(frozen=True)
class FidelityGuards:
    min_correlation: float = 0.5
    proxy_share: float = 0.5


@dataclass(frozen=True)
class FidelityChoice:
    fidelity: Fidelity
    reason: str  # one sentence a user can read
    settings: dict[str, Any]  # the numbers behind it, JSON-ready, for acquisition_settings


def choose_fidelity(
    sources: Sources, fit: MultiTaskFit, x: Tensor, proxy_hours: float, guards: FidelityGuards,
    target_in_flight: bool = False,
) -> FidelityChoice | None:
    """The source to measure `x` (d,) with; `proxy_hours` spent on proxies since the last target result
    (with those in flight). None: wait for the target measurement in flight (see the module docstring)."""
    removed = fit.variance_removed(x)
    correlation = fit.correlations()
    names = [t.fidelity.name for t in fit.tasks]
    per_hour = {t.fidelity.name: removed[i] / t.fidelity.cost for i, t in enumerate(fit.tasks)}
    settings: dict[str, Any] = {
        "variance_removed": dict(zip(names, removed, strict=True)),
        "variance_removed_per_hour": per_hour,
        "task_correlation": dict(zip(names, correlation, strict=True)),
        "proxy_hours_since_target": proxy_hours,
        "min_correlation": guards.min_correlation,
        "proxy_share": guards.proxy_share,
    }
    target = sources.target
    by_name = {t.fidelity.name: t.fidelity for t in fit.tasks}
    eligible = [n for i, n in enumerate(names) if i == 0 or correlation[i] >= guards.min_correlation]
    best = max(eligible, key=lambda n: (per_hour[n], n == target.name))
    versus = f"{target.name} {per_hour[target.name]:.3g} per hour"

    def reason(text: str) -> str:
        return f"{text} (task correlation {_listed(names[1:], correlation[1:])})"

    if best == target.name:
        weak = [n for n in names[1:] if n not in eligible]
        if weak and len(eligible) == 1:
            why = f"{target.name}: no proxy is trusted (correlation below {guards.min_correlation:g})"
        else:
            others = ", ".join(f"{n} {per_hour[n]:.3g} per hour" for n in names[1:])
            why = f"{target.name}: {_scored(target.name, removed[0], per_hour)} vs {others}"
        return FidelityChoice(target, reason(why), settings | {"rule": "variance per hour"})
    limit = guards.proxy_share * target.cost
    if proxy_hours + by_name[best].cost > limit + 1e-9:
        if target_in_flight:
            return None
        why = (
            f"{target.name}: {proxy_hours:.3g} h already on proxies since the last {target.name} measurement "
            f"(limit {limit:.3g} h = {guards.proxy_share:g} x its cost), though {best} scores "
            f"{per_hour[best]:.3g} per hour vs {versus}"
        )
        return FidelityChoice(target, reason(why), settings | {"rule": "proxy share"})
    why = f"{best}: {_scored(best, removed[names.index(best)], per_hour)} vs {versus}"
    return FidelityChoice(by_name[best], reason(why), settings | {"rule": "variance per hour"})


def _scored(name: str, removed: float, per_hour: dict[str, float]) -> str:
    return f"one measurement removes {removed:.2f} of the target's variance here, {per_hour[name]:.3g} per hour"


def _listed(names: list[str], values: list[float]) -> str:
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(names, values, strict=True)) or "none learned"
