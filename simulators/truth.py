"""The noise-free answer of a simulator over a search region: what campaign benchmarks judge trials by.

A protocol's space reaches this layer as a `SearchRegion` (plain ranges, steps, choices, fixed values and
constraint functions), so the simulators never see a protocol file. Each physics model that can find its
own optimum registers a `ground_truth(options, region, units)` in `simulators.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from closedloop.records import Conditions, Value

if TYPE_CHECKING:
    from closedloop.simulators.trmc.process import SearchBox


@dataclass(frozen=True)
class SearchRegion:
    """A protocol's space, in the instrument's units: `ranges` of the float and int parameters (`steps`
    for the int ones), the labels of each choice parameter, the fixed parameters, and the linear
    constraints as functions that are <= 0 where a point is legal."""

    ranges: Mapping[str, tuple[float, float]]
    steps: Mapping[str, int] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fixed: Mapping[str, Value] = field(default_factory=dict)
    constraints: tuple[Callable[[Mapping[str, Value]], float], ...] = ()

    def range_of(self, name: str) -> tuple[float, float]:
        if name not in self.ranges:
            raise ValueError(f"the truth needs {name!r} as a float or int parameter of the space")
        return self.ranges[name]

    def choices_of(self, name: str) -> tuple[str, ...]:
        if name not in self.choices:
            raise ValueError(f"the truth needs {name!r} as a choice parameter of the space")
        return self.choices[name]


@dataclass(frozen=True)
class GroundTruth:
    """The simulator's noise-free answer for one region: `value(conditions)` of the judged quantity
    (0 where the sample cannot have one, e.g. a wrong phase) and its best value over the region."""

    quantity: str
    unit: str
    value: Callable[[Conditions], float]
    optimum_conditions: Mapping[str, Value]
    optimum_value: float
    method: str


def search_box(region: SearchRegion) -> SearchBox:
    """The film process's box (simulators/trmc/process.py) a region spans."""
    from closedloop.simulators.trmc.process import SearchBox

    low, high = region.range_of("spin_speed")
    return SearchBox(
        acceptor_fraction=region.range_of("acceptor_fraction"),
        anneal_temp=region.range_of("anneal_temp"),
        anneal_time=region.range_of("anneal_time"),
        spin_speed=(int(low), int(high), int(region.steps.get("spin_speed", 1))),
        solvents=region.choices_of("solvent"),
    )


def trmc_ground_truth(options: Any, region: SearchRegion, units: Mapping[str, str]) -> GroundTruth:
    """phi_sum_mu_max of the TRMC film model at the options' wavelength and fluence."""
    from closedloop.simulators.trmc.process import TrmcProcessModel

    model = TrmcProcessModel(fluence=float(options.fluence), wavelength=float(options.wavelength))
    conditions, value = model.optimum(region.constraints, search_box(region))
    return GroundTruth(
        quantity="phi_sum_mu_max",
        unit=units.get("phi_sum_mu_max", "cm^2/(V*s)"),
        value=lambda c: float(model.true_phi_sum_mu_max(c)),
        optimum_conditions=conditions,
        optimum_value=float(value),
        method=(
            "TrmcProcessModel.optimum over the protocol's space and linear constraints at the protocol's "
            "wavelength and fluence: per solvent, a 9x12x8 grid over (acceptor_fraction, anneal_temp, "
            "anneal_time) x 9 spin speeds, then COBYLA on the continuous parameters, a full sweep of the "
            "spin speeds and COBYLA again from the best grid point; value = noise-free phi_sum_mu_max "
            "(every sample-scatter factor 1, no acquisition noise)"
        ),
    )


def mbe_ground_truth(options: Any, region: SearchRegion, units: Mapping[str, str]) -> GroundTruth:
    """RRR of the SrRuO3 growth model over a box (the optimizer takes no constraints)."""
    from closedloop.simulators.mbe.station import SimulatedMbeSystem, best_rrr_over

    if region.constraints:
        raise ValueError("the MBE truth's optimizer searches a box; remove `constraints`")
    system = SimulatedMbeSystem(seed=0)
    fixed = {name: float(value) for name, value in region.fixed.items()}
    conditions, value = best_rrr_over(system.truth, dict(region.ranges), fixed)

    def rrr(c: Conditions) -> float:
        return float(system.truth(c).get("rrr", 0.0))

    return GroundTruth(
        quantity="rrr",
        unit=units.get("rrr", ""),
        value=rrr,
        optimum_conditions=conditions,
        optimum_value=float(value),
        method=(
            "simulators.mbe.station.best_rrr_over on the protocol's ranges (fixed parameters held): a 21^3 "
            "grid, then Nelder-Mead from its best point; value = noise-free RRR at the nominal temperatures "
            "(fresh charges, no flux or measurement scatter), 0 for a wrong phase"
        ),
    )
