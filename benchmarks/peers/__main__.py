"""closedloop's planner beside Ax, BayBE, raw BoTorch and random, on identical problems, initial designs,
seeds and noise draws, in one run.

    $ pip install -e '.[peers]'            # Ax and BayBE: benchmark-only, never a runtime dependency
    $ python -m benchmarks.peers --problems hartmann6_noise0.05_q1,branin --seeds 10 --workers 2

Writes benchmarks/results/peers_<problem>.json (every run: points, measurements, truths, CPU per
proposal; the per-tool summary; closedloop's paired wins) after each finished run, so a killed job
resumes where it stopped (finished runs are kept unless --force), and peers_summary.md / .json over every
problem whose results exist. `--list` names the problems.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from benchmarks.peers.catalog import PROBLEMS, problem
from benchmarks.peers.harness import run_one
from benchmarks.peers.report import markdown, summarize
from closedloop.controller.offline.pool_bench import software_versions

RESULTS = Path(__file__).resolve().parents[1] / "results"
TOLERANCE = {"pool_cu_grain_boundary": 1e-4}  # 10 rows within 1e-4 J/m^2 of the minimum count as the best
PACKAGES = ("torch", "botorch", "gpytorch", "ax-platform", "baybe", "scikit-learn")


def _job(args: tuple[str, str, int, dict[str, Any] | None]) -> dict[str, Any]:
    name, tool, seed, options = args
    started = time.perf_counter()
    run = run_one(problem(name), tool, seed, options).as_json()
    run["wall_s"] = round(time.perf_counter() - started, 2)
    return run


def write_problem(name: str, runs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Write the problem's file with `runs` merged into the runs already there (another job may be
    writing other tools' runs of the same problem)."""
    bench = problem(name)
    path = RESULTS / f"peers_{name}.json"
    if path.exists():
        merged = {(r["tool"], r["seed"]): r for r in json.loads(path.read_text())["runs"]}
        merged.update({(r["tool"], r["seed"]): r for r in runs})
        runs = list(merged.values())
    tolerance = TOLERANCE.get(name, 0.0)
    result = {
        "problem": name,
        "description": bench.description,
        "score": {"regret": "final regret at the best measured point",
                  "trials_to_best": "trials to the pool's best row" + (f" (within {tolerance:g})" if tolerance else ""),
                  "trials_to_90": "trials to 90 % of the optimum"}[bench.metric],
        "evaluations": bench.evaluations, "n_initial": bench.n_initial, "q": bench.q, "noise": bench.noise_label,
        "dimensions": bench.dims, "pool_rows": None if bench.pool is None else len(bench.pool.table),
        "optimum": bench.optimum, "settings": settings,
        "summary": summarize(bench, runs, tolerance),
        "runs": sorted(runs, key=lambda r: (r["tool"], r["seed"])),
    }
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(result, indent=None, separators=(",", ":")) + "\n")
    partial.replace(path)  # atomic: a reader never sees half a file
    return result


def write_summary() -> None:
    results = []
    for name in PROBLEMS:
        path = RESULTS / f"peers_{name}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
    table = markdown(results)
    header = ("# closedloop beside its peers\n\nWritten by `python -m benchmarks.peers`; each problem's runs, "
              "settings and machine are in `peers_<problem>.json`. Bold: the best peer's median.\n\n")
    (RESULTS / "peers_summary.md").write_text(header + table)
    summary = {r["problem"]: {"score": r["score"], **r["summary"], "settings": r["settings"]} for r in results}
    for entry in summary.values():
        for tool in entry["tools"].values():
            tool.pop("score_by_seed", None)
    (RESULTS / "peers_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated (default: all)")
    parser.add_argument("--tools", default="closedloop,ax,baybe,botorch,random")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--closedloop-options", default=None, metavar="JSON",
                        help="options for a closedloop variant, run as tool closedloop:<--label>")
    parser.add_argument("--label", default="variant")
    parser.add_argument("--force", action="store_true", help="re-run finished runs")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name in PROBLEMS:
            print(f"{name}: {problem(name).description}")
        return 0
    names = [n.strip() for n in args.problems.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBLEMS]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown or args.seeds < 1 or args.workers < 1:
        parser.error(f"unknown problems {unknown}" if unknown else "--seeds and --workers must be >= 1")
    options = json.loads(args.closedloop_options) if args.closedloop_options else None
    if options is not None:
        tools = [f"closedloop:{args.label}" if t == "closedloop" else t for t in tools]
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = {"versions": software_versions(PACKAGES), "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
                "workers": args.workers, "torch_threads_per_run": 1,
                "closedloop_options": {f"closedloop:{args.label}": options} if options else {}}
    for name in names:
        path = RESULTS / f"peers_{name}.json"
        previous = json.loads(path.read_text()) if path.exists() else {"runs": [], "settings": {}}
        settings_here = {**settings, "closedloop_options": {**previous["settings"].get("closedloop_options", {}),
                                                            **settings["closedloop_options"]}}
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        kept = [r for r in previous["runs"] if not r["error"] and not (args.force and r["tool"] in tools and r["seed"] in seeds)]
        done = {(r["tool"], r["seed"]) for r in kept}
        jobs = [(name, t, s, options if t.startswith("closedloop:") else None) for t in tools for s in seeds if (t, s) not in done]
        print(f"{name}: {len(jobs)} runs to do ({len(kept)} kept), load {os.getloadavg()[0]:.1f}", flush=True)
        runs = list(kept)
        with ProcessPoolExecutor(args.workers) as executor:
            for future in as_completed([executor.submit(_job, job) for job in jobs]):
                run = future.result()
                runs.append(run)
                cpu = sum(run["ask_cpu_s"])
                print(f"  {name} {run['tool']} seed {run['seed']}: {run['wall_s']:.0f} s, {cpu:.0f} CPU s"
                      + (f", ERROR {run['error'].splitlines()[0]}" if run["error"] else ""), flush=True)
                write_problem(name, runs, settings_here)
        write_problem(name, runs, settings_here)
    write_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
