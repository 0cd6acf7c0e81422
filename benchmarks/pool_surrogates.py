"""GP vs random-forest surrogate on the pool datasets, with run_datasets.py's planner settings.

Usage: python benchmarks/pool_surrogates.py CONFIG[,CONFIG...] [--seeds 10]

Configs: melting_gp8 / melting_forest8 (the 8 melting-point descriptors of run_datasets.py, surrogate
forced), melting_auto_all (every usable column of the melting table, surrogate auto), melting_auto_wide
(the 394-column pool of benchmarks/descriptor_pool.py, built into /tmp first), and forest_<target> for
any run_datasets.py target (its inputs, budget and init; surrogate forced to the forest). Prints one
JSON line per config: median trials to the best row, per-seed trials, AF at half, seconds per run.
One process, one torch thread; nothing is tuned per dataset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from descriptor_pool import build  # noqa: E402
from run_datasets import MELTING_INPUTS, PLANNER_OPTIONS, TARGETS  # noqa: E402

from closedloop.controller.offline.pool_bench import BenchSettings, load_pool, report, run_all  # noqa: E402

MELTING = next(t for t in TARGETS if t.name == "melting_points")
WIDE = Path("/tmp/descriptor_pool_melting.csv")


def config(name: str) -> tuple[Path, list[str] | None, str, str, int, int, float, dict[str, Any]]:
    """(path, inputs, objective, direction, budget, init, tolerance, extra botorch options) of a config."""
    melting = (MELTING.objective, MELTING.direction, MELTING.budget, MELTING.init, MELTING.tolerance)
    if name == "melting_gp8":
        return (MELTING.path, MELTING_INPUTS, *melting, {"surrogate": "gp"})
    if name == "melting_forest8":
        return (MELTING.path, MELTING_INPUTS, *melting, {"surrogate": "forest"})
    if name == "melting_auto_all":
        return (MELTING.path, None, *melting, {})
    if name == "melting_auto_wide":
        if not WIDE.is_file():
            import pandas as pd

            build(pd.read_csv(MELTING.path)).to_csv(WIDE, index=False)
        return (WIDE, None, *melting, {})
    if name.startswith("forest_"):
        t = next(x for x in TARGETS if x.name == name.removeprefix("forest_"))
        return (t.path, t.inputs, t.objective, t.direction, t.budget, t.init, t.tolerance, {"surrogate": "forest"})
    raise SystemExit(f"unknown config {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.configs.split(","):
        path, inputs, objective, direction, budget, init, tolerance, extra = config(name)
        pool = load_pool(path, inputs, objective, direction)
        options = {"botorch": {**PLANNER_OPTIONS["botorch"], **extra}}
        settings = BenchSettings(("botorch",), tuple(range(args.seeds)), budget, init, options)
        started = time.perf_counter()
        runs = run_all(pool, settings, workers=1)
        result = report(pool, settings, runs, tolerance, 1, time.perf_counter() - started)["planners"]["botorch"]
        print(json.dumps({
            "config": name, "inputs": len(pool.inputs), "median_trials_to_best": result["median_trials_to_best"],
            "trials_to_best": result["trials_to_best"], "found_best": result["found_best"],
            "acceleration_factor_at_half": result["acceleration_factor_at_half"],
            "seconds_per_run": [round(r.seconds, 1) for r in runs],
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
