"""`closedloop replay CAMPAIGN.sqlite`: audit a recorded campaign, or replay it with another planner.

Without --planner: the audit (controller.offline.audit). Exit 0 when every proposal is re-derived identically,
1 when one is not (each mismatch names the trial and the difference), 2 on bad input.
With --planner: counterfactual campaigns (controller.offline.counterfactual), one per seed, in --out; prints
the side-by-side comparison with the original. Exit 0, or 2 on bad input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from closedloop.controller.cli.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from closedloop.controller.offline.audit import audit
from closedloop.controller.offline.counterfactual import (
    INSTRUMENTS,
    PLANNERS,
    CounterfactualError,
    CounterfactualSpec,
    sweep,
)
from closedloop.controller.offline.executors import EXECUTORS, ExecutorError, ExecutorSpec
from closedloop.controller.protocol.model import ProtocolError
from closedloop.controller.store.errors import StoreError

EXIT_MISMATCH = EXIT_FAILED  # an audit found a proposal it could not re-derive


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`mc_samples=64` -> {"mc_samples": 64}; values parsed as JSON when they can be."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise CounterfactualError(f"--option {pair!r}: expected NAME=VALUE, e.g. mc_samples=64")
        try:
            options[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[name.strip()] = raw
    return options


@click.command("replay")
@click.argument("campaign", type=click.Path(path_type=Path))
@click.option("--planner", type=click.Choice(PLANNERS), help="Counterfactual: run this planner instead of auditing.")
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
              help="A planner option for the counterfactual, e.g. mc_samples=64 or n_initial=3 (repeatable).")
@click.option("--instrument", type=click.Choice(INSTRUMENTS), default="lookup", show_default=True,
              help="Counterfactual stand-in: the recorded results as a pool, a GP surrogate of them, or the simulator.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Counterfactual runs (seeds FIRST-SEED .. FIRST-SEED+N-1).")
@click.option("--first-seed", default=0, show_default=True, type=int, help="Seed of the first counterfactual run.")
@click.option("--budget", type=click.IntRange(min=1), help="Trials per counterfactual run (default: the original's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the counterfactual campaign files (default: CAMPAIGN's folder/replays).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="process", show_default=True,
              help="Where runs (and audited proposals) go: local processes, or dask.")
@click.option("--workers", default=os.cpu_count() or 1, show_default="cores", type=click.IntRange(min=1),
              help="Worker processes (one torch thread each); with dask, LocalCluster workers.")
@click.option("--dask-scheduler", metavar="ADDRESS", help="An existing dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the audit report or the comparison to this JSON file.")
def replay(
    campaign: Path, planner: str | None, options: tuple[str, ...], instrument: str, seeds: int, first_seed: int,
    budget: int | None, out: Path | None, executor: str, workers: int, dask_scheduler: str | None,
    json_out: Path | None,
) -> None:
    """Audit CAMPAIGN: re-derive every recorded proposal from the recorded observations, seed and planner
    version, and report which match. No instrument is needed.

    With --planner random|botorch: run that planner against the recorded results (--instrument lookup),
    a GP surrogate fitted to them (surrogate) or the protocol's simulator (sim), write new campaign files
    linked to CAMPAIGN, and compare them with it side by side.
    """
    try:
        spec = ExecutorSpec(executor, workers, dask_scheduler)
        if planner is None:
            if options or budget is not None or out is not None:
                raise CounterfactualError("--option, --budget and --out apply to a counterfactual: add --planner")
            report = audit(campaign, spec)
            lines, result, code = report.lines(), report.as_dict(), EXIT_OK if report.all_match else EXIT_MISMATCH
        else:
            cf = CounterfactualSpec(planner, instrument, _options(options), budget)
            folder = out or campaign.parent / "replays"
            comparison = sweep(campaign, folder, cf, range(first_seed, first_seed + seeds), spec)
            lines, result, code = comparison.lines(), comparison.as_dict(), EXIT_OK
    except ProtocolError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_BAD_INPUT)
    except (CounterfactualError, ExecutorError, StoreError, FileNotFoundError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo("\n".join(lines))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        click.echo(f"wrote {json_out}")
    sys.exit(code)
