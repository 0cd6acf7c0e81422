"""Planning latency of the BoTorch planner on noisy Hartmann-6 (q=1, continuous 6-D).

Usage: python benchmarks/planner_latency.py [--repeats 5] [--sizes 50 100 200 500 1000] [--threads 2 1]
Writes benchmarks/results/planner_latency.json: machine, versions, settings, median seconds per size.
Targets: <= 0.5 s at n = 100 and <= 5 s at n = 1000 on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.planners.botorch_planner import BotorchPlanner  # noqa: E402
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace  # noqa: E402
from closedloop.simulators.testfunctions import hartmann6  # noqa: E402

NAMES = [f"x{i}" for i in range(1, 7)]
PROBLEM = Problem(
    SearchSpace(tuple(FloatParameter(n, 0.0, 1.0) for n in NAMES)), (Objective("y", maximize=False),)
)
NOISE_SD = 0.05


def observations(n: int, seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6))
    return [
        Observation(
            {k: float(v) for k, v in zip(NAMES, x, strict=True)},
            {"y": hartmann6(x) + NOISE_SD * rng.normal()},
        )
        for x in X
    ]


def measure(planner: BotorchPlanner, n: int, repeats: int) -> dict[str, float]:
    totals, fits, optimizes = [], [], []
    for r in range(repeats):
        data = observations(n, seed=1000 * n + r)
        started = time.perf_counter()
        [proposal] = planner.propose(PROBLEM, data, [], 1, seed=r)
        totals.append(time.perf_counter() - started)
        fits.append(proposal.provenance.fit_time_s)
        optimizes.append(proposal.provenance.optimize_time_s)
        assert proposal.provenance.fallback is None, proposal.provenance.fallback
    return {
        "median_s": statistics.median(totals),
        "median_fit_s": statistics.median(fits),
        "median_optimize_s": statistics.median(optimizes),
        "max_s": max(totals),
        "repeats": repeats,
    }


def run(planner: BotorchPlanner, sizes: list[int], repeats: int, threads: int) -> dict:
    """Median latencies per size with `threads` torch threads (set here, in the benchmark process only)."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    planner.propose(PROBLEM, observations(20, seed=0), [], 1, seed=0)  # warm up imports and kernels
    results = {}
    for n in sizes:
        results[str(n)] = measure(planner, n, repeats)
        print(f"threads={threads} n={n:5d}  median {results[str(n)]['median_s']:.3f} s", flush=True)
    # Other processes competing for the cores inflate every number; the load says how much.
    return {"load_average_1min_before_after": [load_before, os.getloadavg()[0]], "by_n": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "planner_latency.json"
    )
    args = parser.parse_args()
    planner = BotorchPlanner(n_initial=1)
    report = {
        "benchmark": "BotorchPlanner.propose, q=1, noisy Hartmann-6 (noise sd 0.05), uniform random observations",
        "targets_s": {"100": 0.5, "1000": 5.0},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "botorch", "gpytorch", "numpy", "scipy")},
        },
        "planner": {
            "name": planner.name,
            "version": planner.version,
            "settings": vars(planner.settings)
            | {
                "mc_samples": planner.mc_samples,
                "fit_maxiter": planner.fit_maxiter,
                "max_fit_points": planner.max_fit_points,
            },
        },
        "results_by_torch_threads": {str(t): run(planner, args.sizes, args.repeats, t) for t in args.threads},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
