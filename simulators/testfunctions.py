"""Classic optimization test functions as noisy simulated instruments (`sim:branin`, `sim:hartmann6`).

They let the engine and planners be exercised end to end in virtual time without any lab physics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Limit,
    Measurement,
    SafetyEnvelope,
    Value,
)
from closedloop.drivers.options import DriverOptions


def branin(x1: float, x2: float) -> float:
    """Branin-Hoo; minimum 0.397887 at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)."""
    b, c, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(x: np.ndarray) -> float:
    """Hartmann-6 on [0, 1]^6; minimum -3.32237 at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)."""
    inner = np.sum(_H6_A * (np.asarray(x, dtype=float) - _H6_P) ** 2, axis=1)
    return float(-np.sum(_H6_ALPHA * np.exp(-inner)))


@dataclass(frozen=True)
class FunctionModel:
    description: DriverDescription
    evaluate: Callable[[Mapping[str, Value]], float]
    optimum: float
    duration_s: float  # virtual instrument time of one evaluation


def _box(names: list[str], low: float, high: float) -> SafetyEnvelope:
    return SafetyEnvelope({n: Limit(min=low, max=high) for n in names})


_H6_NAMES = [f"x{i}" for i in range(1, 7)]

TEST_FUNCTIONS: dict[str, FunctionModel] = {
    "branin": FunctionModel(
        DriverDescription("sim:branin", SafetyEnvelope({"x1": Limit(-5, 10), "x2": Limit(0, 15)}), {"y": ""}),
        lambda c: branin(float(c["x1"]), float(c["x2"])),
        optimum=0.397887,
        duration_s=60.0,
    ),
    "hartmann6": FunctionModel(
        DriverDescription("sim:hartmann6", _box(_H6_NAMES, 0.0, 1.0), {"y": ""}),
        lambda c: hartmann6(np.array([float(c[n]) for n in _H6_NAMES])),
        optimum=-3.32237,
        duration_s=60.0,
    ),
}


class FunctionOptions(DriverOptions):
    """`instrument.options` of a test-function instrument: measurement noise, and how often a trial is an
    instrument fault (retried) or a failed sample (data for the planner)."""

    noise_sd: float = Field(0.0, ge=0.0)
    fault_rate: float = Field(0.0, ge=0.0, le=1.0)
    failure_rate: float = Field(0.0, ge=0.0, le=1.0)


class FunctionInstrument:
    """A test function behind the Driver interface: noise, a virtual duration, envelope checks, and
    optional failure modes so the engine's fault and failed-sample paths can be exercised:
    `fault_rate` (the instrument errors, the trial should be retried) and `failure_rate` (the sample
    is bad: a failed measurement the planner learns from). Both are deterministic per (seed, trial)."""

    def __init__(
        self, model: str, *, seed: int = 0, noise_sd: float = 0.0, fault_rate: float = 0.0, failure_rate: float = 0.0
    ) -> None:
        self.model = TEST_FUNCTIONS[model]
        self.seed = seed
        self.noise_sd = noise_sd
        self.fault_rate = fault_rate
        self.failure_rate = failure_rate
        self.safe_state_calls = 0

    def describe(self) -> DriverDescription:
        return self.model.description

    def check(self, conditions: Mapping[str, Value]) -> None:
        self.model.description.envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        ctx.journal("tx", "EVAL " + " ".join(f"{k}={v}" for k, v in sorted(conditions.items())))
        ctx.clock.sleep(self.model.duration_s)
        rng = np.random.default_rng([self.seed, ctx.trial_id])
        noise, fault, failure = rng.standard_normal(), rng.random(), rng.random()
        if fault < self.fault_rate:
            ctx.journal("rx", "ERR instrument fault (simulated)")
            raise InstrumentFault(f"simulated instrument fault on trial {ctx.trial_id}")
        if failure < self.failure_rate:
            ctx.journal("rx", "NO SIGNAL")
            return Measurement(
                status="failed_sample",
                instrument=self.model.description.name,
                detail="simulated failed sample",
                duration_s=self.model.duration_s,
            )
        y = self.model.evaluate(conditions) + self.noise_sd * float(noise)
        ctx.journal("rx", f"{y!r}")
        return Measurement(
            values={"y": y},
            units={"y": ""},
            instrument=self.model.description.name,
            analysis="direct",
            analysis_version="1",
            duration_s=self.model.duration_s,
        )

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return None

    def safe_state(self) -> None:
        self.safe_state_calls += 1

    def close(self) -> None:
        pass
