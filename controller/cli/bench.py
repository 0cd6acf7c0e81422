"""`closedloop bench`: benchmark planners against a table of measured materials (pool mode).

Exit codes: 0 ok, 2 bad input (missing file, unknown column, bad direction, impossible budget, ...).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from closedloop.controller.cli.exit_codes import EXIT_BAD_INPUT
from closedloop.controller.offline.bench_metrics import TOP_K
from closedloop.controller.offline.executors import EXECUTORS, ExecutorError, ExecutorSpec
from closedloop.controller.offline.pool_bench import (
    BenchInputError,
    BenchSettings,
    PoolRun,
    load_pool,
    run_benchmark,
)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _planner_options(pairs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`botorch.mc_samples=64` -> {"botorch": {"mc_samples": 64}}; values parsed as JSON when they can be."""
    options: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        planner, dot, name = key.partition(".")
        if not sep or not dot or not planner.strip() or not name.strip():
            raise BenchInputError(f"--option {pair!r}: expected PLANNER.NAME=VALUE, e.g. botorch.mc_samples=64")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(planner.strip(), {})[name.strip()] = value
    return options


@click.command("bench")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--inputs", default=None,
              help="Comma-separated input columns, e.g. dx,gb,dz (default: every usable column but the objective).")
@click.option("--objective", required=True, help="The objective column.")
@click.option("--direction", required=True, type=click.Choice(["max", "min"]), help="Maximize or minimize the objective.")
@click.option("--planners", default="botorch,random", show_default=True, help="Comma-separated planner names.")
@click.option("--seeds", default=20, show_default=True, type=click.IntRange(min=1), help="Runs per planner (seeds 0..N-1).")
@click.option("--budget", required=True, type=int, help="Trials per run, the initial random rows included.")
@click.option("--init", default=2, show_default=True, type=int, help="Random rows revealed before the planner is asked.")
@click.option("--tolerance", default=0.0, show_default=True, type=float,
              help="A row within this much of the best value counts as finding the best.")
@click.option("--workers", default=os.cpu_count() or 1, show_default="cores", type=click.IntRange(min=1),
              help="Worker processes (one torch thread each).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="process", show_default=True,
              help="Where the runs go: local worker processes, or dask (a LocalCluster, or --dask-scheduler).")
@click.option("--dask-scheduler", metavar="ADDRESS", help="An existing dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--max-candidates", type=click.IntRange(min=1),
              help="Offer the planner at most this many unrevealed rows per trial (seeded random subset).")
@click.option("--option", "options", multiple=True, metavar="PLANNER.NAME=VALUE",
              help="A planner option, e.g. botorch.mc_samples=64 (repeatable).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report (per-seed results, curves, versions, machine) to this file.")
@click.option("--quiet", is_flag=True, help="No per-run progress lines.")
def bench(
    dataset: Path, inputs: str | None, objective: str, direction: str, planners: str, seeds: int, budget: int,
    init: int, tolerance: float, workers: int, executor: str, dask_scheduler: str | None, max_candidates: int | None, options: tuple[str, ...],
    json_out: Path | None, quiet: bool,
) -> None:
    """Replay planners against DATASET.csv, one row per experiment, and compare them with random sampling.

    Reports per planner the trials needed to find the best row, the fraction of the top 5 % found,
    and the enhancement (EF) and acceleration (AF) factors against random sampling's exact expectation.
    """
    try:
        if tolerance < 0:
            raise BenchInputError(f"--tolerance must be >= 0, got {tolerance}")
        pool = load_pool(dataset, None if inputs is None else _split(inputs), objective, direction)
        settings = BenchSettings(
            planners=tuple(_split(planners)),
            seeds=tuple(range(seeds)),
            budget=budget,
            init=init,
            planner_options=_planner_options(options),
            max_candidates=max_candidates,
        )
        spec = ExecutorSpec(executor, workers, dask_scheduler)
        result = run_benchmark(pool, settings, tolerance, workers, None if quiet else _progress, spec)
    except (BenchInputError, ExecutorError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(format_report(result))
    if json_out is not None:
        click.echo(f"wrote {json_out}")


def _progress(run: PoolRun) -> None:
    click.echo(f"  {run.planner} seed {run.seed}: {len(run.order)} trials in {run.seconds:.1f} s", err=True)


def _number(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _inputs_line(data: dict[str, Any], most: int = 12) -> str:
    """Which columns were the inputs, and which columns were left out and why."""
    inputs = data["inputs"]
    shown = ", ".join(inputs[:most]) + (f", ... ({len(inputs) - most} more)" if len(inputs) > most else "")
    by_reason: dict[str, list[str]] = {}
    for entry in data.get("dropped_inputs") or []:  # "column (why)"
        column, _, why = entry.rpartition(" (")
        by_reason.setdefault(why.rstrip(")"), []).append(column)
    left_out = "; ".join(
        f"{', '.join(columns[:4])}{f', ... ({len(columns)} columns)' if len(columns) > 4 else ''} ({why})"
        for why, columns in by_reason.items()
    )
    return f"inputs ({len(inputs)}): {shown}" + (f"; left out: {left_out}" if left_out else "")


def format_report(result: dict[str, Any]) -> str:
    """The short table `closedloop bench` prints."""
    data, settings, baseline = result["dataset"], result["settings"], result["random_baseline"]
    lines = [
        f"{data['path']}: {data['pool_size']} rows, {data['direction']} {data['objective']} "
        f"(best {data['best_value']:.6g}; {data['rows_counting_as_best']} row(s) within tolerance "
        f"{settings['tolerance']:g}; top 5 % = {data['top_count']} rows)",
        _inputs_line(data),
        f"budget {settings['budget']} trials incl. {settings['init']} random initial rows, "
        f"{len(settings['seeds'])} seeds, {result['wall_time_s']:.0f} s",
        "",
        f"{'planner':<10} {'to best (median)':>16} {'found':>7} {f'to top-{TOP_K}':>9} "
        f"{'top-5% at end':>13} {'AF@50%':>7} {'EF@50%':>7}",
        f"{'random*':<10} {baseline['median_trials_to_best']:>16.1f} {'-':>7} "
        f"{baseline[f'median_trials_to_top{TOP_K}']:>9.1f} "
        f"{baseline['top_fraction_curve'][-1]:>13.2f} {1.0:>7.2f} {1.0:>7.2f}",
    ]
    for name, p in result["planners"].items():
        lines.append(
            f"{name:<10} {_number(p['median_trials_to_best']):>16} "
            f"{p['found_best']:>3}/{len(p['trials_to_best']):<3} "
            f"{_number(p[f'median_trials_to_top{TOP_K}']):>9} {_number(p['top_fraction_at_budget'], '.2f'):>13} "
            f"{_number(p['acceleration_factor_at_half'], '.2f'):>7} {_number(p['enhancement_factor_at_half'], '.2f'):>7}"
        )
    lines.append("* random: exact medians and means of sampling without replacement, no runs needed")
    lines.append("'-': not reached within the budget by at least half the seeds (or, for AF/EF, by the mean curve)")
    return "\n".join(lines)
