"""`closedloop validate PROTOCOL...`: check protocol files before any hardware moves; with --dry-run, run
each campaign against its simulator too (`controller.cli.dryrun`)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from closedloop.controller.cli.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from closedloop.controller.protocol.model import ProtocolError, load_protocol
from closedloop.controller.protocol.summary import ParameterSummary, StepSummary, ValidationSummary
from closedloop.controller.protocol.validate import ValidationReport, validate_protocol


@click.command("validate")
@click.argument("protocols", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (a list of per-file results).")
@click.option("--dry-run", is_flag=True, help="Then run each campaign against the instrument's simulator, in virtual time.")
@click.option("--port", help="With --dry-run: the emulator's port (`closedloop emulate MODEL --pty` prints it).")
@click.option("--time-scale", type=float, help="With --port: the emulator's --time-scale.")
@click.option("--seed", type=int, help="With --dry-run: override the protocol's planner seed.")
@click.option("--scratch-dir", type=click.Path(file_okay=False), help="With --dry-run: keep the dry-run campaign files here.")
@click.option("--report", "report_to", type=click.Path(dir_okay=False),
              help="With --dry-run of one protocol: write the simulated campaign's HTML report here (its "
                   "schedule as a Gantt chart, utilization per station, and the campaign's figures).")
def validate_command(
    protocols: tuple[Path, ...], as_json: bool, dry_run: bool, port: str | None, time_scale: float | None,
    seed: int | None, scratch_dir: str | None, report_to: str | None,
) -> None:
    """Check protocol files before any hardware moves: schema, units, safety envelope, constraint
    feasibility, objectives, budget and candidate table. Exit 0 if every file is valid, 2 otherwise.

    With --dry-run, each valid file's whole campaign then runs through the real engine and driver against
    the instrument's simulator: exit 1 if a safety or consistency problem appears."""
    if not dry_run:
        extra = [name for name, given in (("--port", port), ("--time-scale", time_scale), ("--seed", seed),
                                          ("--scratch-dir", scratch_dir), ("--report", report_to)) if given is not None]
        if extra:
            raise click.UsageError(f"{', '.join(extra)} only apply with --dry-run")
        sys.exit(run_validate(protocols, as_json=as_json))
    if time_scale is not None and port is None:
        raise click.UsageError("--time-scale paces the dry run with an emulator on --port; give --port too")
    if report_to is not None and len(protocols) > 1:
        raise click.UsageError(f"--report {report_to} is one file for {len(protocols)} protocols; dry-run one at a time")
    if report_to is not None:  # refused before minutes of simulation, not after
        target = Path(report_to)
        if not target.parent.is_dir() or target.is_dir():
            raise click.BadParameter(f"{report_to}: write it into an existing folder, as a file", param_hint="--report")
    from closedloop.controller.cli.dryrun import run_dry_runs

    sys.exit(run_dry_runs(protocols, validate_file, _problem_line, as_json=as_json, port=port,
                          time_scale=time_scale, seed=seed, scratch_dir=scratch_dir, report_to=report_to))


def validate_file(path: Path) -> dict[str, Any]:
    """One file's result as `--json` prints it: {"file", "valid", "problems", "summary"}."""
    return check_file(path)[0]


def check_file(path: Path) -> tuple[dict[str, Any], ValidationSummary | None]:
    """One file's result ({"file", "valid", "problems": [{file, line, col, field, message}], "summary"}) and
    its summary as a record (None when the file is not valid)."""
    try:
        protocol = load_protocol(path)
    except OSError as e:
        reason = e.strerror or str(e)
        return _result(path, [{"file": str(path), "line": None, "col": None, "field": "", "message": f"cannot read: {reason}"}])
    except ProtocolError as e:
        return _result(path, [vars(p) for p in e.problems])
    report = validate_protocol(protocol)
    return _result(path, [vars(p) for p in report.problems], report)


def run_validate(paths: Sequence[Path], *, as_json: bool = False) -> int:
    """Validate each file, print the outcome (problems to stderr, summaries to stdout), return the exit code."""
    checked = [check_file(Path(p)) for p in paths]
    results = [result for result, _ in checked]
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    else:
        for result, summary in checked:
            if summary is not None:
                click.echo(format_summary(result["file"], summary))
            for problem in result["problems"]:
                click.echo(_problem_line(problem), err=True)
    return EXIT_OK if all(r["valid"] for r in results) else EXIT_BAD_INPUT


def _result(
    path: Path, problems: list[dict[str, Any]], report: ValidationReport | None = None
) -> tuple[dict[str, Any], ValidationSummary | None]:
    summary = report.summary if report is not None and not problems else None
    result = {"file": str(path), "valid": not problems, "problems": problems,
              "summary": None if summary is None else summary.to_dict()}
    return result, summary


def _problem_line(problem: dict[str, Any]) -> str:
    if problem["line"] is None:
        return f"{problem['file']}: {problem['message']}"
    where = f"{problem['file']}:{problem['line']}:{problem['col']}"
    return f"{where}: {problem['field']}: {problem['message']}" if problem["field"] else f"{where}: {problem['message']}"


def format_summary(file: str, s: ValidationSummary) -> str:
    """The short human summary `closedloop validate` prints for a valid protocol."""
    lines = [f"{file}: valid: {s.name}" + (f" ({s.description})" if s.description else ""), "  parameters:"]
    width = max(len(p.name) for p in s.parameters)
    for p in s.parameters:
        lines.append(f"    {p.name:<{width}}  {p.type:<6}  {_range(p)}")
    if s.constraints:
        lines.append(f"  constraints ({'feasible' if s.feasible else 'INFEASIBLE'}):")
        lines += [f"    {c.text}" + ("   (always holds inside the bounds)" if c.redundant else "") for c in s.constraints]
    lines.append("  objectives:")
    for o in s.objectives:
        extras = ["log scale" if o.log else "", f"target {o.target:g} {o.unit}".rstrip() if o.target is not None else ""]
        lines.append(f"    {o.direction} {o.name}{_unit(o.unit)}" + "".join(f", {x}" for x in extras if x))
    objectives = {o.name for o in s.objectives}
    for text in s.outcome_constraints:
        name = re.match(r"\s*(\w+)", text)
        measured_only = name is not None and name.group(1) not in objectives
        lines.append(f"    subject to {text}" + ("   (measured, not optimized: the planner models it with its own GP)"
                                                 if measured_only else ""))
    measured = ", ".join(f"{name} [{unit}]" if unit else name for name, unit in s.instrument.measures.items())
    if s.steps:
        lines.append("  workflow (each sample, step by step):")
        for step in s.steps:
            lines.append(f"    {step.name}: {step_line(step)}")
    elif s.instrument.by_hand:
        lines.append(f"  instrument: {s.instrument.driver}, measured by hand (no envelope: the space bounds what the "
                     f"operator is shown); measures {measured}")
    else:
        where = s.instrument.connection or "an in-process simulator"
        lines.append(f"  instrument: {s.instrument.driver} at {where}; measures {measured}")
    if s.fidelities:
        lines.append("  fidelities (sources of the objective; the planner picks one per trial, weighing by cost):")
        for f in s.fidelities:
            lines.append(f"    {f.name}: measures {f.measures}, {_duration(f.cost_s)} each, steps {' -> '.join(f.steps)}"
                         + ("; the target" if f.target else ""))
    if s.envelope_margins:
        lines.append("  envelope margins (distance from each bound to the instrument's limit):")
        for m in s.envelope_margins:
            below = "-" if m.low_margin is None else f"{m.low_margin:g}"
            above = "-" if m.high_margin is None else f"{m.high_margin:g}"
            lines.append(f"    {m.parameter:<{width}}  {below} below, {above} above {m.unit}".rstrip())
    wall = f", at most {_duration(s.budget.wall_time_s)}" if s.budget.wall_time_s is not None else ""
    if s.budget.instrument_time_s is not None:
        wall += f", at most {_duration(s.budget.instrument_time_s)} of instrument time at the declared costs"
    lines.append(f"  budget: {s.budget.trials} trials ({s.planner.initial} initial, {s.planner.method}){wall}; "
                 f"approval: {s.approval}")
    if s.candidates:
        lines.append(f"  pool: {s.candidates.rows} candidate rows from {s.candidates.path}")
    lines += [f"  note: {note}" for note in s.notes]
    return "\n".join(lines)


def step_line(step: StepSummary) -> str:
    """One workflow step for people: where it runs, what it receives and measures, how it is scheduled."""
    where = f"{step.driver} at {step.connection}" if step.connection else step.driver
    parts = [where + (f" x{step.stations}" if step.stations > 1 else "")]
    parts.append(f"receives {', '.join(step.parameters)}" if step.parameters else "receives no parameter")
    if step.measures:
        parts.append("measures " + ", ".join(f"{n} [{u}]" if u else n for n, u in step.measures.items()))
    if step.duration_s:
        parts.append(f"takes {_duration(step.duration_s)}")
    if step.max_wait_s is not None:
        parts.append(f"within {_duration(step.max_wait_s)} of the step before")
    parts.append("repeated after a crash" if step.repeatable else "a crash loses the sample")
    return "; ".join(parts)


def _range(p: ParameterSummary) -> str:
    if p.type == "choice":
        return " | ".join(p.values or ())
    if p.type == "fixed":
        return f"{p.value:g} {p.unit}".rstrip() if isinstance(p.value, float) else str(p.value)
    text = f"{p.low:g} .. {p.high:g} {p.unit}".rstrip()
    if p.type == "int" and p.step != 1:
        text += f", step {p.step}"
    return text + (", log scale" if p.log else "")


def _unit(unit: str) -> str:
    return f" [{unit}]" if unit else ""


def _duration(seconds: float) -> str:
    """The largest unit that shows the time as a whole number (400 h, not 16.6667 day), else the largest."""
    units = [(size, name) for size, name in ((86400, "day"), (3600, "h"), (60, "min")) if seconds >= size]
    for size, name in units:
        if (seconds / size).is_integer():
            return f"{seconds / size:g} {name}"
    if units:
        return f"{seconds / units[0][0]:g} {units[0][1]}"
    return f"{seconds:g} s"
