"""Sources of one objective and what each costs: the protocol's `fidelities:` section.

    objectives:
      pce: {direction: maximize, unit: "%"}
    fidelities:
      film:                                   # the cheap proxy: a TRMC shot on the film
        steps: [coat, anneal, measure]        # the workflow steps a film sample passes through
        measures: phi_sum_mu_max
        log: true                             # model log10 of it (it spans decades)
        cost: 20 min
      device:                                 # the truth: a finished solar cell
        steps: [coat, anneal, fabricate, jv]
        measures: pce                         # the target measures the objective
        cost: 24 h
        target: true

Each source is a route through the workflow: a sample proposed for `film` skips the device steps and one
proposed for `device` skips the TRMC station. The planner models the sources jointly and chooses, for
each proposal, the conditions and the source (weighing what a measurement teaches about the target by
its declared cost); `budget: {instrument_time: 200 h}` counts each trial at its source's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import Field

from closedloop.controller.protocol.sections import Duration, Section
from closedloop.controller.protocol.workflow import Step, StepSection
from closedloop.planners.space import Fidelity

FieldPath = tuple[str | int, ...]


class FidelitySection(Section):
    """One source of the objective: the steps a sample of it passes through, what it measures, its cost."""

    steps: list[str] = Field(min_length=1)
    measures: str
    cost: Duration  # seconds of instrument time per measurement (declared: the planner weighs by it)
    log: bool = False
    target: bool = False


@dataclass(frozen=True)
class FidelityProblem:
    """A problem with the fidelities section: where it is (under `fidelities`) and what is wrong."""

    path: FieldPath
    message: str


def fidelity_records(fidelities: Mapping[str, FidelitySection]) -> tuple[Fidelity, ...]:
    """The planner's view: each source with its cost in hours."""
    return tuple(Fidelity(name, f.measures, f.cost / 3600.0, f.log, f.target) for name, f in fidelities.items())


def routes(fidelities: Mapping[str, FidelitySection], steps: list[Step]) -> dict[str, tuple[int, ...]]:
    """Each source's steps, as indices into the workflow (in workflow order)."""
    index = {step.name: step.index for step in steps}
    return {name: tuple(sorted(index[s] for s in f.steps if s in index)) for name, f in fidelities.items()}


def fidelity_problems(
    fidelities: Mapping[str, FidelitySection],
    *,
    workflow: Mapping[str, StepSection] | None,
    objectives: list[str],
    measured_by: Callable[[str], set[str] | None],
) -> list[FidelityProblem]:
    """What is wrong with `fidelities` given the rest of the protocol. `measured_by(step)` is what a step's
    instrument measures (None when its description cannot be read: validate reports that elsewhere)."""
    if not fidelities:
        return [FidelityProblem((), "fidelities is empty: declare two or more sources, or remove the section")]
    if workflow is None:
        return [FidelityProblem((), "fidelities need a workflow: each source is a route through the workflow's steps "
                            "(see protocols/opv_device_mf.yaml)")]
    found: list[FidelityProblem] = []
    if len(fidelities) < 2:
        found.append(FidelityProblem((), "one source is no choice: declare two or more (a cheap proxy and the target), "
                                 "or remove fidelities"))
    targets = [name for name, f in fidelities.items() if f.target]
    if len(targets) != 1:
        found.append(FidelityProblem((), f"exactly one source is the target (target: true); {len(targets)} are"
                                 + (f" ({', '.join(targets)})" if targets else "")))
    if len(objectives) != 1:
        found.append(FidelityProblem((), f"fidelities are sources of one objective; this protocol has {len(objectives)}"))
    order = list(workflow)
    first = order[0]
    needed = [name for name, step in workflow.items() if step.parameters]
    used: set[str] = set()
    for name, f in fidelities.items():
        if f.cost <= 0:
            found.append(FidelityProblem((name, "cost"), f"a cost is a positive time such as 20 min, got {f.cost:g} s"))
        unknown = [s for s in f.steps if s not in workflow]
        for i, s in enumerate(f.steps):
            if s in unknown:
                found.append(FidelityProblem((name, "steps", i), f"{s!r} is not a step of the workflow ({', '.join(order)})"))
        known = [s for s in f.steps if s in workflow]
        used.update(known)
        if known != sorted(set(known), key=order.index):
            found.append(FidelityProblem((name, "steps"), f"list the steps once each, in the workflow's order: "
                                                  f"{', '.join(sorted(set(known), key=order.index))}"))
        if known and first not in known:
            found.append(FidelityProblem((name, "steps"), f"every sample enters the line at its first step ({first}); "
                                                  f"add {first} to the steps"))
        for s in needed:
            if s not in known:
                found.append(FidelityProblem((name, "steps"), f"{s} sets parameters of the space "
                                                      f"({', '.join(workflow[s].parameters)}): every source passes it"))
        if f.target and len(objectives) == 1 and f.measures != objectives[0]:
            found.append(FidelityProblem((name, "measures"), f"the target measures the objective {objectives[0]!r}, "
                                                     f"not {f.measures!r}"))
        measured: set[str] = set()
        readable = True
        for s in known:
            step_measures = measured_by(s)
            readable = readable and step_measures is not None
            measured |= step_measures or set()
        if readable and known and f.measures not in measured:
            found.append(FidelityProblem((name, "measures"), f"none of its steps measures {f.measures!r}; they measure "
                                                     f"{', '.join(sorted(measured)) or 'nothing'}"))
    for s in order:
        if s not in used:
            found.append(FidelityProblem((), f"no source passes step {s!r}: add it to a source's steps or remove it"))
    return found


__all__ = ["FidelityProblem", "FidelitySection", "fidelity_problems", "fidelity_records", "routes"]
