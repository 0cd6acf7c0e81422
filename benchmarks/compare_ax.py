"""Our BotorchPlanner next to Ax's default loop on noisy Hartmann-6 (minimize, q=1), seed by seed.

Usage: python benchmarks/compare_ax.py [--seeds 5] [--evaluations 48] [--tools botorch ax] [--threads N]
Needs Ax (`pip install -e '.[bench]'`). Writes benchmarks/results/compare_ax.json: machine, versions,
settings, per tool and seed the trace, and per tool the medians over seeds of
- latency per iteration: wall time of one model-based proposal (GP fit + acquisition optimization;
  for Ax the whole `get_next_trials` call of a BoTorch step), initial-design steps excluded;
- final simple regret: noise-free Hartmann-6 at the best *observed* point (lowest noisy y) minus the
  global minimum, after the last evaluation. Both tools are scored the same way, so neither gains
  from its own recommendation rule.
Each tool keeps its own default initial design (ours: 8 Sobol points; Ax: 5, the centre included).
The noise of evaluation i of seed s is the same draw for both tools.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.planners.botorch_planner import BotorchPlanner  # noqa: E402
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace  # noqa: E402
from closedloop.simulators.testfunctions import TEST_FUNCTIONS, hartmann6  # noqa: E402

NAMES = [f"x{i}" for i in range(1, 7)]
NOISE_SD = 0.05  # as in benchmarks/planner_latency.py
OPTIMUM = TEST_FUNCTIONS["hartmann6"].optimum
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Trace:
    """One tool's run: the points it asked for, what it was told, and how long each proposal took."""

    points: list[list[float]]
    noisy: list[float]
    seconds: list[float]
    model_based: list[bool]  # False for initial-design steps

    def regret_at_best_observed(self) -> float:
        best = int(np.argmin(self.noisy))
        return hartmann6(np.array(self.points[best])) - OPTIMUM

    def best_noise_free_regret(self) -> float:
        return min(hartmann6(np.array(p)) for p in self.points) - OPTIMUM


def noisy_value(x: list[float], seed: int, i: int) -> float:
    """Hartmann-6 plus the seed's i-th noise draw (identical for every tool)."""
    return hartmann6(np.array(x)) + NOISE_SD * float(np.random.default_rng([seed, i]).standard_normal())


def run_ours(seed: int, evaluations: int) -> Trace:
    problem = Problem(
        SearchSpace(tuple(FloatParameter(n, 0.0, 1.0) for n in NAMES)), (Objective("y", maximize=False),)
    )
    planner = BotorchPlanner()  # every option at its default, the initial design included
    trace = Trace([], [], [], [])
    observations: list[Observation] = []
    for i in range(evaluations):
        started = time.perf_counter()
        [proposal] = planner.propose(problem, observations, [], 1, seed=1000 * seed + i)
        trace.seconds.append(time.perf_counter() - started)
        trace.model_based.append(proposal.provenance.design == "model")
        x = [float(proposal.conditions[n]) for n in NAMES]
        y = noisy_value(x, seed, i)
        trace.points.append(x)
        trace.noisy.append(y)
        observations.append(Observation(dict(proposal.conditions), {"y": y}))
    return trace


def _import_ax() -> Any:
    try:
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig
    except ImportError:
        raise SystemExit(
            "Ax is not installed; install the benchmark extra with: pip install -e '.[bench]'"
        ) from None
    return Client, RangeParameterConfig


def run_ax(seed: int, evaluations: int) -> Trace:
    Client, RangeParameterConfig = _import_ax()
    client = Client(random_seed=seed)
    client.configure_experiment(
        parameters=[RangeParameterConfig(name=n, bounds=(0.0, 1.0), parameter_type="float") for n in NAMES]
    )
    client.configure_optimization(objective="-y")  # Ax maximizes; "-y" minimizes y
    trace = Trace([], [], [], [])
    for i in range(evaluations):
        started = time.perf_counter()
        [(index, parameters)] = client.get_next_trials(max_trials=1).items()
        trace.seconds.append(time.perf_counter() - started)
        node = client._experiment.trials[index].generator_runs[0]._generation_node_name  # noqa: SLF001
        # Ax names its steps; the initial design is its Sobol/centre nodes, the rest is modelled (MBM).
        trace.model_based.append("sobol" not in str(node).lower() and "center" not in str(node).lower())
        x = [float(parameters[n]) for n in NAMES]
        y = noisy_value(x, seed, i)
        trace.points.append(x)
        trace.noisy.append(y)
        client.complete_trial(trial_index=index, raw_data={"y": y})
    return trace


TOOLS: dict[str, Callable[[int, int], Trace]] = {"botorch": run_ours, "ax": run_ax}


def summarize(traces: dict[int, Trace]) -> dict[str, Any]:
    latencies = [s for t in traces.values() for s, m in zip(t.seconds, t.model_based, strict=True) if m]
    regrets = [t.regret_at_best_observed() for t in traces.values()]
    return {
        "median_latency_per_model_step_s": statistics.median(latencies) if latencies else None,
        "initial_design_size": sum(not m for m in next(iter(traces.values())).model_based),
        "median_final_regret_at_best_observed": statistics.median(regrets),
        "final_regret_at_best_observed_by_seed": regrets,
        "median_best_noise_free_regret": statistics.median(
            t.best_noise_free_regret() for t in traces.values()
        ),
        "median_total_planning_s": statistics.median(sum(t.seconds) for t in traces.values()),
    }


def _versions(tools: list[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in (
        "torch",
        "botorch",
        "gpytorch",
        "numpy",
        "scipy",
        *(["ax-platform"] if "ax" in tools else []),
    ):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def write_report(out: Path, results: dict[str, Any]) -> None:
    report = {
        "benchmark": "noisy Hartmann-6 (minimize, noise sd 0.05), q=1, sequential, same noise draws for every tool",
        "regret": "noise-free f at the best-observed point (lowest noisy y) minus the global minimum -3.32237",
        "latency": "wall time of one model-based proposal (fit + acquisition optimization), initial design excluded",
        "settings": {
            "noise_sd": NOISE_SD,
            "botorch_planner": "BotorchPlanner() defaults",
            "ax": "ax.api.Client defaults",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "tools": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=48)
    parser.add_argument("--tools", nargs="+", choices=sorted(TOOLS), default=["botorch", "ax"])
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_ax.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for both tools (1 on a machine other jobs load: spinning threads multiply latency)",
    )
    args = parser.parse_args()
    if args.seeds < 1 or args.evaluations < 2 or args.threads < 1:
        parser.error("need --seeds >= 1, --evaluations >= 2 and --threads >= 1")
    torch.set_num_threads(args.threads)
    if "ax" in args.tools:
        _import_ax()  # fail before spending minutes on the other tool
        from ax.utils.common.logger import set_ax_logger_levels

        set_ax_logger_levels(logging.ERROR)  # Ax logs every trial at INFO
    warnings.filterwarnings("ignore")  # Ax and BoTorch warn about fit details on every step
    # Tools not re-run keep their earlier results, so each can be re-measured on its own.
    previous = json.loads(args.out.read_text()).get("tools", {}) if args.out.exists() else {}
    results: dict[str, Any] = {k: v for k, v in previous.items() if k not in args.tools}
    for tool in args.tools:
        load_before = os.getloadavg()[0]
        started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        traces: dict[int, Trace] = {}
        for seed in range(args.seeds):
            started = time.perf_counter()
            traces[seed] = TOOLS[tool](seed, args.evaluations)
            print(
                f"{tool:8s} seed {seed}: regret {traces[seed].regret_at_best_observed():.4f} "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            # Written after every seed, so a run stopped early still leaves its finished seeds.
            results[tool] = summarize(traces) | {
                "seeds": len(traces),
                "evaluations": args.evaluations,
                "torch_threads": torch.get_num_threads(),
                "started_at": started_at,
                # Other processes competing for the two cores inflate latencies; the load says how much.
                "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
                "versions": _versions([tool]),
                "runs": {str(s): vars(t) for s, t in traces.items()},
            }
            write_report(args.out, results)
    print(f"{'tool':8s} {'init':>4s} {'latency/step s':>15s} {'median regret':>14s} {'total plan s':>13s}")
    for tool, r in results.items():
        print(
            f"{tool:8s} {r['initial_design_size']:4d} {r['median_latency_per_model_step_s']:15.3f} "
            f"{r['median_final_regret_at_best_observed']:14.4f} {r['median_total_planning_s']:13.1f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
