"""The planner's view of a campaign: parameters, linear constraints, objectives.

These records are plain numbers in the protocol's declared units; unit handling, YAML and
validation live in `controller.protocol.model`, which builds a `Problem` from a protocol file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from closedloop.records import Conditions, Value


@dataclass(frozen=True)
class FloatParameter:
    name: str
    low: float
    high: float
    log: bool = False  # search uniformly in log10(x); requires low > 0


@dataclass(frozen=True)
class IntParameter:
    name: str
    low: int
    high: int
    step: int = 1  # allowed values: low, low + step, ..., <= high


@dataclass(frozen=True)
class ChoiceParameter:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class FixedParameter:
    """Held constant for the campaign: sent to the instrument, never searched."""

    name: str
    value: Value


Parameter = FloatParameter | IntParameter | ChoiceParameter | FixedParameter


@dataclass(frozen=True)
class LinearConstraint:
    """sum(coefficients[name] * x[name]) <kind> rhs, over numeric parameters."""

    coefficients: dict[str, float]
    rhs: float
    kind: Literal["<=", "=="] = "<="
    text: str = ""  # the expression as the user wrote it, for messages

    def evaluate(self, conditions: Mapping[str, Value]) -> float:
        """Left-hand side minus rhs: <= 0 when an inequality holds, 0 when an equality holds."""
        return sum(c * float(conditions[n]) for n, c in self.coefficients.items()) - self.rhs

    def holds(self, conditions: Mapping[str, Value], tol: float = 1e-6) -> bool:
        slack = self.evaluate(conditions)
        scale = tol * max(1.0, abs(self.rhs), *(abs(c) for c in self.coefficients.values()))
        return abs(slack) <= scale if self.kind == "==" else slack <= scale


@dataclass(frozen=True)
class Objective:
    name: str
    maximize: bool = True
    log: bool = False  # model log10(y): the quantity spans decades
    target: float | None = None  # a value that counts as "good enough" (stop rule)


@dataclass(frozen=True)
class OutcomeConstraint:
    """A measured quantity that must satisfy `name op bound`, e.g. tau_half >= 100."""

    name: str
    op: Literal["<=", ">="]
    bound: float


@dataclass(frozen=True)
class Fidelity:
    """One source that measures (a proxy of) the objective, at a cost: a TRMC film in minutes, a device in a day.

    Exactly one fidelity of a problem is the `target`: it measures `problem.objectives[0]`. The others
    measure their own quantity (`measures`), which the multi-fidelity planner relates to the target by
    learning how the two co-vary over the space.
    """

    name: str  # "film", "device"
    measures: str  # the quantity this source measures: "phi_sum_mu_max", "pce"
    cost: float  # hours per measurement (declared in the protocol)
    log: bool = False  # model log10 of the measured quantity
    target: bool = False  # exactly one fidelity is the target; it measures problem.objectives[0]


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]
    constraints: tuple[LinearConstraint, ...] = ()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def contains(self, conditions: Conditions, tol: float = 1e-6) -> bool:
        """True when `conditions` is a legal point: every value allowed, every constraint met."""
        if set(conditions) != set(self.names):
            return False
        for p in self.parameters:
            v = conditions[p.name]
            if isinstance(p, ChoiceParameter):
                if v not in p.values:
                    return False
            elif isinstance(p, FixedParameter):
                if v != p.value:
                    return False
            elif isinstance(p, IntParameter):
                if not isinstance(v, int) or isinstance(v, bool):
                    return False
                if v < p.low or v > p.high or (v - p.low) % p.step:
                    return False
            else:
                span = tol * max(1.0, abs(p.high - p.low))
                if not isinstance(v, float | int) or not (p.low - span <= v <= p.high + span):
                    return False
        return all(c.holds(conditions, tol) for c in self.constraints)


@dataclass(frozen=True)
class Problem:
    """Everything a planner needs to know about a campaign, and nothing about instruments."""

    space: SearchSpace
    objectives: tuple[Objective, ...]
    outcome_constraints: tuple[OutcomeConstraint, ...] = ()
    # Multi-objective reference point (per objective, in the objective's own units); inferred if None.
    reference_point: dict[str, float] | None = None
    # Sources of the objective with their costs; empty: an ordinary single-source problem.
    fidelities: tuple[Fidelity, ...] = ()


@dataclass(frozen=True)
class Observation:
    """One finished trial as the planner sees it.

    `failed` marks a failed sample (the experiment ran, the material is bad): it carries no objective
    values but tells the planner where the process fails. Instrument faults never reach a planner.
    `fidelity` names the source that measured it (`Problem.fidelities`); None is the target, or a
    problem without fidelities. An observation of fidelity f carries `values = {f.measures: v}`.
    """

    conditions: Conditions
    values: dict[str, float] = field(default_factory=dict)
    failed: bool = False
    fidelity: str | None = None
