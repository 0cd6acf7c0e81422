"""What a dry run's campaign file says about the protocol: envelope margins, time spent ramping, how well
the initial design covers the space, and whether the objective's target is within the simulator's reach.

Pure functions over what the store holds (trials, events, commands) and the protocol; `controller.dryrun.run`
runs the campaign and assembles the report from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from closedloop.controller.engine.stations import simulator_truth
from closedloop.controller.protocol.model import Protocol
from closedloop.controller.store.reads import TrialRecord
from closedloop.drivers.base import Limit, Value
from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.sampling import derive_seed, sample_legal
from closedloop.planners.space import Conditions, Objective, Problem

# A temperature loop's process-value poll (`RU_CELL:PV?`): a driver repeating it is waiting out a ramp.
# A temperature loop read: on the growth controller's line (`RU_CELL:PV?`), or a register of its own Modbus
# controller as ModbusController journals it (`RU_CELL unit 2 READ 1 x1`).
LOOP_READ = re.compile(r"^([A-Z_]+:(PV|SP)\?|[A-Z_]+ unit \d+ READ \d+ x\d+)$")
RAMP_DOMINATES = 0.5  # share of instrument time spent ramping above which a ramp dominates the budget
COVERAGE_PROBES = 2048  # legal points the initial design's coverage is measured on
COVERAGE_REFERENCES = 32  # random designs of the same size it is compared with
COVERAGE_QUANTILE = 0.9  # worse than 9 of 10 random designs: poor coverage
TRUTH_SAMPLES = 256  # legal points the simulator's noise-free model is evaluated on


@dataclass
class LimitMargin:
    """How close the setpoints sent for one envelope limit came to it.

    `margin`: smallest distance from a sent value to min or max, as a fraction of max - min (0: on the
    limit; 0.5: mid-range); `largest_step` and `step_fraction` compare the biggest jump between
    consecutive setpoints of a station with `max_step`."""

    parameter: str
    unit: str
    min: float | None
    max: float | None
    setpoints: int
    lowest: float
    highest: float
    margin: float | None
    closest_trial: int
    closest_value: float
    closest_bound: str
    max_step: float | None = None
    largest_step: float | None = None
    step_fraction: float | None = None
    step_trial: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def setpoint_margins(
    limits: Mapping[str, Limit], dispatched: Sequence[tuple[int, str, Mapping[str, Value]]]
) -> list[LimitMargin]:
    """Margins per numeric limit over `dispatched` = (trial id, station, setpoints in instrument units),
    in dispatch order."""
    out = []
    for name, limit in limits.items():
        sent = [(tid, station, float(c[name])) for tid, station, c in dispatched if _numeric(c.get(name))]
        if limit.allowed is not None or not sent:
            continue
        values = [v for _, _, v in sent]
        m = LimitMargin(name, limit.unit, limit.min, limit.max, len(sent), min(values), max(values), None,
                        sent[0][0], sent[0][2], "", limit.max_step)
        span = (limit.max - limit.min) if limit.min is not None and limit.max is not None else None
        for tid, _, v in sent:
            for bound, distance in (("min", _minus(v, limit.min)), ("max", _minus(limit.max, v))):
                if distance is None:
                    continue
                fraction = distance / span if span else distance
                if m.margin is None or fraction < m.margin:
                    m.margin, m.closest_trial, m.closest_value, m.closest_bound = fraction, tid, v, bound
        if limit.max_step:
            _step_margin(m, sent, limit.max_step)
        out.append(m)
    return out


def _step_margin(m: LimitMargin, sent: Sequence[tuple[int, str, float]], max_step: float) -> None:
    last: dict[str, float] = {}
    for tid, station, v in sent:
        if station in last:
            step = abs(v - last[station])
            if m.largest_step is None or step > m.largest_step:
                m.largest_step, m.step_trial = step, tid
        last[station] = v
    if m.largest_step is not None:
        m.step_fraction = m.largest_step / max_step


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def ramp_seconds(commands: Sequence[Mapping[str, Any]], when: Callable[[Mapping[str, Any]], float]) -> dict[int, float]:
    """Per trial, the instrument time the driver spent polling temperature loops (`<LOOP>:PV?` and
    `<LOOP>:SP?`, or their Modbus controllers' registers, back to back) while waiting for them to reach
    their setpoints: the ramps. `when(command)` is its time in seconds."""
    out: dict[int, float] = {}
    previous: dict[int, tuple[float, bool]] = {}
    for c in commands:
        if c["direction"] != "tx" or c["trial_id"] is None:
            continue
        t = when(c)
        polling = bool(LOOP_READ.match(c["text"]))
        last = previous.get(c["trial_id"])
        if polling and last is not None and last[1]:
            out[c["trial_id"]] = out.get(c["trial_id"], 0.0) + (t - last[0])
        previous[c["trial_id"]] = (t, polling)
    return out


@dataclass
class Coverage:
    """How far the initial design leaves the space uncovered, in the unit cube of the numeric parameters:
    `gap` is the largest distance from a legal point to its nearest design point; `typical_gap` that of
    the median random legal design of the same size, `poor_gap` of the 90th-percentile one."""

    points: int
    dimensions: int
    gap: float
    typical_gap: float
    poor_gap: float
    missing_choices: dict[str, list[str]]

    @property
    def poor(self) -> bool:
        return self.gap > self.poor_gap

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "poor": self.poor}


def initial_coverage(
    problem: Problem, design: Sequence[Conditions], seed: int, pool: Sequence[Conditions] | None = None
) -> Coverage | None:
    """The coverage of `design` (the initial trials), compared with random designs of the same size drawn
    from the legal space (or from the candidate `pool`). None when there is nothing to measure."""
    encoding = SpaceEncoding(problem.space)
    columns = [c.column for c in encoding.numeric]
    if not design or not columns:
        return None
    probes_c = list(pool) if pool is not None else sample_legal(encoding, COVERAGE_PROBES, derive_seed(seed, "probe"))
    probes = encoding.encode(probes_c).numpy()[:, columns]
    x = encoding.encode(design).numpy()[:, columns]
    rng = np.random.default_rng(derive_seed(seed, "coverage"))
    gaps = []
    for i in range(COVERAGE_REFERENCES):
        if pool is not None:
            rows = rng.choice(len(probes), size=min(len(design), len(probes)), replace=False)
            reference = probes[rows]
        else:
            drawn = sample_legal(encoding, len(design), derive_seed(seed, "reference", str(i)), "random")
            reference = encoding.encode(drawn).numpy()[:, columns]
        gaps.append(_fill_distance(probes, reference))
    missing = {}
    for ch in encoding.choices:
        seen = {point[ch.parameter.name] for point in design}
        absent = [str(v) for v in ch.parameter.values if v not in seen]
        if absent and len(design) >= len(ch.parameter.values):
            missing[ch.parameter.name] = absent
    return Coverage(len(design), len(columns), _fill_distance(probes, x), float(np.median(gaps)),
                    float(np.quantile(gaps, COVERAGE_QUANTILE)), missing)


def _fill_distance(probes: np.ndarray, design: np.ndarray) -> float:
    distances = np.sqrt(((probes[:, None, :] - design[None, :, :]) ** 2).sum(axis=-1))
    return float(distances.min(axis=1).max())


def reachable_best(protocol: Protocol, objective: Objective, seed: int) -> tuple[float, str] | None:
    """The best value of `objective` the instrument could give anywhere in the space, as far as can be
    known without running it: the candidate table's best row in pool mode, else the simulator's noise-free
    model over a space-filling set of legal points. With a note saying which."""
    choose = max if objective.maximize else min
    table = protocol.candidates_frame()
    if table is not None and objective.name in table.columns:
        column = table[objective.name].dropna()
        return (float(choose(column)), "the best row of the candidate table") if len(column) else None
    truth = simulator_truth(protocol, seed)
    if truth is None:
        return None
    problem = protocol.to_problem()
    found = []
    for point in sample_legal(SpaceEncoding(problem.space), TRUTH_SAMPLES, derive_seed(seed, "truth")):
        try:
            value = truth(protocol.to_instrument_units(dict(point))).get(objective.name)
        except ValueError:  # a point the model itself refuses cannot count as reachable
            continue
        if isinstance(value, int | float) and _numeric(value):
            found.append(float(value))
    if not found:
        return None
    return choose(found), f"the simulator's noise-free model, best of {TRUTH_SAMPLES} legal points"


def measured_best(objective: Objective, trials: Sequence[TrialRecord]) -> tuple[float, int] | None:
    """The best measured value of `objective` in the dry run and its trial."""
    values = [(t.values[objective.name], t.id) for t in trials
              if t.state == "measured" and _numeric(t.values.get(objective.name))]
    if not values:
        return None
    return (max if objective.maximize else min)(values)
