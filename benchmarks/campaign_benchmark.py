"""Whole-campaign benchmarks for the TRMC (issue #6) and MBE (issue #7) example protocols.

Usage:
    python benchmarks/campaign_benchmark.py protocols/trmc_opv_blend.yaml --seeds 10 \
        --planners botorch,random --json benchmarks/results/campaign_trmc.json
    python benchmarks/campaign_benchmark.py protocols/mbe_srruo3.yaml --seeds 10 \
        --json benchmarks/results/campaign_mbe.json

Each (planner, seed) is a real simulated campaign (`Campaign.create(..., sim=True).run(sim=True)`) with the
protocol's budget and stop rules overridden (see `controller.offline.campaign_bench`); every trial is judged by the
simulator's noise-free value at its conditions. Prints a table and writes the full report as JSON.
Exit codes: 0 ran (whether or not the targets were met), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from closedloop.controller.offline.campaign_bench import (  # noqa: E402
    DEFAULT_BUDGETS,
    MIN_RATIO,
    REACH_FRACTION,
    CampaignBenchError,
    SeedRun,
    run_campaign_benchmark,
)
from closedloop.controller.protocol.model import ProtocolError  # noqa: E402

EXIT_BAD_INPUT = 2


def parse_budgets(pairs: list[str]) -> dict[str, int]:
    """["random=200"] -> {"random": 200}."""
    budgets: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise CampaignBenchError(f"--budget {pair!r}: expected PLANNER=TRIALS, e.g. random=150")
        budgets[name.strip()] = int(value)
    return budgets


def table(report: Mapping[str, Any]) -> str:
    """The short summary a terminal shows."""
    truth = report["truth"]
    lines = [
        f"{report['protocol']['name']}: true {truth['quantity']} optimum {truth['optimum_value']:.4g} {truth['unit']}; "
        f"target {REACH_FRACTION:.0%} of it = {truth['target_value']:.4g}; {len(report['seeds'])} seeds",
        f"{'planner':<8} {'budget':>6} {'reached':>7} {'median':>7}  {'trials to target, per seed':<44} {'failed':>9} {'wall s':>7}",
    ]
    for name, result in report["planners"].items():
        per_seed = " ".join("-" if t is None else str(t) for t in result["trials_to_target"])
        median = result["median_trials_to_target"]
        shown = f">{result['budget']}" if median is None else f"{median:g}"
        reached = f"{result['reached']}/{len(result['trials_to_target'])}"
        # Failed samples over all trials run: each one a film or a growth spent on nothing.
        failed = f"{sum(s['failed_samples'] for s in result['seeds'])}/{sum(s['trials'] for s in result['seeds'])}"
        lines.append(
            f"{name:<8} {result['budget']:>6} {reached:>7} {shown:>7}  {per_seed:<44} {failed:>9} {result['wall_s_total']:>7.0f}"
        )
    comparison = report["comparison"]
    if "ratio" in comparison:
        if comparison["ratio"] is not None:
            ratio = f"{comparison['ratio']:.2f}"
        elif comparison["ratio_lower_bound"] is not None:
            ratio = f">= {comparison['ratio_lower_bound']:.2f} (random's median is past its budget)"
        else:
            ratio = "n/a (botorch's median is past its budget)"
        lines.append(f"random/botorch median ratio: {ratio}")
    if "botorch_median_met" in comparison:
        lines.append(
            f"issue #{comparison['issue']}: botorch median <= {comparison['max_median']:g}: "
            f"{'met' if comparison['botorch_median_met'] else 'NOT met'}; random/botorch >= {MIN_RATIO:g}: "
            f"{'met' if comparison['ratio_met'] else 'NOT met'}"
        )
    lines.append(f"wall time {report['wall_time_s']:.0f} s with {report['workers']} worker(s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", type=Path)
    parser.add_argument("--seeds", type=int, default=10, help="campaigns per planner, seeds 0..N-1 (default 10)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (default 0): a second, independent set of campaigns")
    parser.add_argument("--planners", default="botorch,random", help="comma-separated (default botorch,random)")
    parser.add_argument(
        "--budget", action="append", default=[], metavar="PLANNER=TRIALS",
        help=f"trials per campaign (defaults {', '.join(f'{k}={v}' for k, v in DEFAULT_BUDGETS.items())}); repeatable",
    )
    parser.add_argument("--workers", type=int, default=2, help="parallel campaigns (default 2)")
    parser.add_argument("--json", dest="json_out", type=Path, help="write the full report here")
    parser.add_argument("--keep", type=Path, help="keep the campaign files in this folder (default: a temp folder)")
    args = parser.parse_args(argv)

    def progress(run: SeedRun) -> None:
        print(f"  {run.planner} seed {run.seed}: {len(run.trials)} trials, {run.wall_s:.0f} s", file=sys.stderr, flush=True)

    try:
        if args.seeds < 1 or args.workers < 1 or args.first_seed < 0:
            raise CampaignBenchError("--seeds and --workers must be at least 1, --first-seed at least 0")
        planners = [p.strip() for p in args.planners.split(",") if p.strip()]
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        report = run_campaign_benchmark(
            args.protocol, seeds, planners, parse_budgets(args.budget), args.workers, args.keep, progress
        )
    except (CampaignBenchError, ProtocolError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(table(report))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
