"""One run of one tool on one problem, and the per-seed numbers the report compares."""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmarks.peers.problems import BenchProblem, Point


@dataclass
class Run:
    problem: str
    tool: str
    seed: int
    points: list[Point] = field(default_factory=list)
    measured: list[float | None] = field(default_factory=list)  # None: the sample failed
    truths: list[float | None] = field(default_factory=list)
    ask_cpu_s: list[float] = field(default_factory=list)  # CPU seconds of each model-based ask
    ask_wall_s: list[float] = field(default_factory=list)
    outside: int = 0  # points a tool proposed outside the box or breaking a constraint (measured anyway)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_one(problem: BenchProblem, tool_name: str, seed: int, options: dict[str, Any] | None = None) -> Run:
    """The shared initial design, then the tool's asks until the problem's evaluations are spent.

    `tool_name` "closedloop" or "closedloop:<label>" with `options` runs a variant of our planner."""
    import torch

    from benchmarks.peers.tools import ClosedloopTool, registry

    torch.set_num_threads(1)
    run = Run(problem.name, tool_name, seed)
    tool = ClosedloopTool(options, tool_name) if tool_name.startswith("closedloop") else registry()[tool_name]()
    pool = problem.pool
    rows = pool.rows_by_key() if pool is not None else {}
    revealed = np.zeros(len(pool.table) if pool is not None else 0, dtype=bool)

    def measure(points: list[Point]) -> list[float | None]:
        values: list[float | None] = []
        for x in points:
            if pool is not None:
                row = rows.get(pool.key(x))
                if row is None or revealed[row]:
                    raise RuntimeError(f"{tool_name} proposed {x}: {'not a pool row' if row is None else 'already measured'}")
                revealed[row] = True
            elif not _inside(problem, x):
                run.outside += 1
            value = problem.measure(x, seed, len(run.points))
            run.points.append(dict(x))
            run.measured.append(value)
            run.truths.append(problem.truth(x))
            values.append(value)
        return values

    try:
        initial = problem.initial_design(seed)
        tool.start(problem, seed)
        tool.tell(initial, measure(initial))
        while len(run.points) < problem.evaluations:
            q = min(problem.q, problem.evaluations - len(run.points))
            unrevealed = pool.table.loc[~revealed, list(pool.inputs)] if pool is not None else None
            cpu, wall = time.process_time(), time.perf_counter()
            points = tool.ask(q, unrevealed)
            run.ask_cpu_s.append(time.process_time() - cpu)
            run.ask_wall_s.append(time.perf_counter() - wall)
            if not points:
                raise RuntimeError(f"{tool_name} proposed nothing")
            tool.tell(points, measure(points[:q]))
    except Exception as error:  # noqa: BLE001 - a tool that breaks is a result, not the end of the benchmark
        run.error = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=4)}"
    return run


def _inside(problem: BenchProblem, x: Point) -> bool:
    for p in problem.params:
        v = x.get(p.name)
        if p.kind == "choice":
            if str(v) not in p.values:
                return False
        elif not isinstance(v, int | float) or not p.low - 1e-9 <= float(v) <= p.high + 1e-9:
            return False
    return all(c.holds(x) for c in problem.constraints)


def regret_curve(problem: BenchProblem, run: dict[str, Any]) -> list[float]:
    """After each evaluation: the truth at the best *measured* point (failed samples never best), as regret."""
    best_value, best_regret, curve = None, math.inf, []
    sign = 1.0 if problem.maximize else -1.0
    for measured, truth in zip(run["measured"], run["truths"], strict=True):
        if measured is not None and truth is not None and (best_value is None or sign * measured > sign * best_value):
            best_value = measured
            best_regret = problem.optimum - truth if problem.maximize else truth - problem.optimum
        curve.append(best_regret)
    return curve


def trials_to(problem: BenchProblem, run: dict[str, Any], tolerance: float) -> int | None:
    """The first evaluation (1-based) whose successful measurement's truth is within `tolerance` of the
    optimum (`trials_to_best`), or reaches 90 % of it (`trials_to_90`); None if never."""
    for i, (measured, truth) in enumerate(zip(run["measured"], run["truths"], strict=True), start=1):
        if measured is None or truth is None:
            continue
        if problem.metric == "trials_to_90" and truth >= 0.9 * problem.optimum:
            return i
        if problem.metric == "trials_to_best" and abs(truth - problem.optimum) <= tolerance:
            return i
    return None
