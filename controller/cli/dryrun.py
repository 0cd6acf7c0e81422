"""`closedloop validate --dry-run`: plain validation first, then the dry run of each valid file, printed
for a person (or as one JSON document). Exit 0 when every campaign would run safely, 1 when a safety or
consistency problem appeared, 2 for bad input (a file that fails validation is not dry-run)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from closedloop.controller.cli.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from closedloop.controller.dryrun.run import DryRunReport, dry_run
from closedloop.controller.report.schedule.text import station_line, summary_lines

EXIT_UNSAFE = EXIT_FAILED  # a dry run found a safety or consistency problem
FOLD_MIN_REPEATS = 3  # a block of commands sent this many times in a row is printed once
# Longest block of commands looked for: a poll of every heater loop, 16 requests when the cells' Modbus
# controllers are read back on each poll (alarms, setpoints, rate, working setpoint, PV).
FOLD_MAX_BLOCK = 24


def run_dry_runs(
    paths: Sequence[Path],
    validate_file: Callable[[Path], dict[str, Any]],
    problem_line: Callable[[dict[str, Any]], str],
    *,
    as_json: bool = False,
    port: str | None = None,
    time_scale: float | None = None,
    seed: int | None = None,
    scratch_dir: str | None = None,
    report_to: str | None = None,
) -> int:
    """Validate each file with `validate_file` (the CLI's, whose `problem_line` prints a problem), dry-run
    the valid ones, print, and return the exit code."""
    from closedloop.controller.campaign import BadInput
    from closedloop.controller.cli.errors import configure_runtime
    from closedloop.controller.engine.stations import InstrumentUnavailable
    from closedloop.controller.protocol.model import ProtocolError

    configure_runtime()
    results, codes = [], []
    for path in paths:
        result = validate_file(Path(path))
        if result["valid"]:
            try:
                report = dry_run(path, port=port, time_scale=time_scale, seed=seed, scratch_dir=scratch_dir,
                                 report_to=report_to)
            except ProtocolError as e:
                result["problems"] = [vars(p) for p in e.problems]
            except (BadInput, InstrumentUnavailable, OSError) as e:
                result["problems"] = [{"file": str(path), "line": None, "col": None, "field": "", "message": str(e)}]
            else:
                result["dry_run"] = report.to_dict()
                if not as_json:
                    click.echo(format_report(report))
                    if report_to is not None:
                        click.echo(f"  report (the schedule as a Gantt chart): {report_to}")
                codes.append(report.exit_code)
        if result["problems"]:
            result["valid"] = False
            codes.append(EXIT_BAD_INPUT)
            if not as_json:
                for problem in result["problems"]:
                    click.echo(problem_line(problem), err=True)
        results.append(result)
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
    return max(codes, default=EXIT_OK)


def format_report(r: DryRunReport) -> str:
    """The dry run as a person reads it: verdict last, so it is what stays on the screen."""
    lines = [*_run_lines(r), *_schedule_lines(r), *_operator_lines(r), *_envelope_lines(r)]
    if r.coverage is not None:
        c = r.coverage
        lines.append(f"  initial design: {c.points} points in {c.dimensions} numeric dimensions; largest gap "
                     f"{c.gap:.2f} (unit cube; random designs typically {c.typical_gap:.2f})")
    if r.transcript_trial is not None:
        sent = sum(x["direction"] == "tx" for x in r.transcript)
        lines.append(f"  commands for trial {r.transcript_trial} ({sent} sent; repeated polls folded):")
        lines += [f"    {line}" for line in fold_transcript(r.transcript)]
    lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines + _verdict_lines(r))


def _run_lines(r: DryRunReport) -> list[str]:
    states = ", ".join(f"{n} {_STATE_WORDS.get(s, s)}" for s, n in sorted(r.states.items()))
    lines = [
        f"{r.protocol}: dry run of {r.name} against the {r.instrument}, seed {r.seed}",
        f"  would run {sum(r.states.values())} trials ({states}); it would stop: {r.stop_reason}",
    ]
    if r.best is not None:
        lines.append(f"  best {r.best['objective']}: {r.best['value']:.4g} (trial {r.best['trial']})")
    ramp = f", {r.ramp_time_s / r.instrument_time_s:.0%} of it ramping" if r.instrument_time_s and r.ramp_time_s else ""
    lines.append(f"  instrument time: {_duration(r.instrument_time_s)}{ramp}; "
                 f"campaign time: {_duration(r.campaign_time_s)}")
    if r.spend is not None:
        lines.append(f"  sources: {r.spend['spent_hours']:.4g} h at the declared costs ("
                     + ", ".join(f"{s['name']} {s['results']} x {s['cost_hours']:.3g} h" for s in r.spend["sources"]) + ")"
                     + (f" of a {r.spend['budget_hours']:g} h budget" if r.spend["budget_hours"] is not None else ""))
    decisions = len(r.approvals) + len(r.operator_steps)
    parts = [f"{decisions} operator decisions x {_duration(r.operator_step_s)}" if decisions else "",
             f"planning and simulation {_duration(r.dry_run_wall_s)} as measured here"]
    budget = f"; budget {_duration(r.budget_wall_time_s)}" if r.budget_wall_time_s is not None else ""
    lines.append(f"  estimated wall time live: {_duration(r.wall_time_estimate_s)} "
                 f"(incl. {', '.join(x for x in parts if x)}){budget}")
    return lines


def _schedule_lines(r: DryRunReport) -> list[str]:
    s = r.schedule
    if s is None:
        return []
    lines = [f"  schedule over {_duration(s.horizon_s)} (first step started to last ended), utilization per station:"]
    lines += [f"    {station_line(u)}" for u in s.stations]
    return lines + [f"  {line}" for line in summary_lines(s)]


def _operator_lines(r: DryRunReport) -> list[str]:
    lines = [f"  approvals the protocol would ask for: {len(r.approvals) or 'none'}"]
    lines += [f"    trial {a['trial']}: {a['why']}" for a in r.approvals]
    lines.append(f"  operator steps: {len(r.operator_steps) or 'none'}")
    lines += [f"    trial {s['trial']}: {s['step']}" for s in r.operator_steps[:3]]
    if len(r.operator_steps) > 3:
        lines.append(f"    ... and {len(r.operator_steps) - 3} more")
    return lines


def _envelope_lines(r: DryRunReport) -> list[str]:
    lines = [f"  envelope: {r.gate_checks} safety-gate checks; closest approach of the dispatched setpoints to each limit:"]
    width = max((len(m.parameter) for m in r.margins), default=0)
    for m in r.margins:
        sent = f"{m.lowest:.6g}" if m.lowest == m.highest else f"{m.lowest:.6g} .. {m.highest:.6g}"
        margin = ("no limit" if m.margin is None
                  else f"{m.margin:.1%} of the range from {m.closest_bound} (trial {m.closest_trial})")
        if m.step_fraction is not None:
            margin += f"; largest step {m.largest_step:.4g} = {m.step_fraction:.0%} of max_step (trial {m.step_trial})"
        lines.append(f"    {m.parameter:<{width}}  sent {sent} {m.unit}".rstrip() + f": {margin}")
    return lines


def _verdict_lines(r: DryRunReport) -> list[str]:
    if r.safe:
        return [f"  SAFE: the campaign would run without a safety or consistency problem (exit {r.exit_code})"]
    lines = [f"  PROBLEMS (exit {r.exit_code}):"]
    for p in r.problems:
        where = [f"trial {p.trial}" if p.trial is not None else "", f"command {p.command}" if p.command else ""]
        named = ", ".join(x for x in where if x)
        lines.append(f"    {p.kind}" + (f" ({named})" if named else "") + f": {p.message}")
    return lines


_STATE_WORDS = {"failed": "failed samples", "rejected": "rejected by the gate or the operator"}


def fold_transcript(transcript: Sequence[dict[str, Any]]) -> list[str]:
    """One line per command with its reply, a block of commands repeated back to back printed once with
    how often and until when."""
    exchanges: list[tuple[float, str, str | None]] = []
    for entry in transcript:
        if entry["direction"] == "tx":
            exchanges.append((entry["t_s"], entry["text"], None))
        elif exchanges and exchanges[-1][2] is None:
            t, text, _ = exchanges[-1]
            exchanges[-1] = (t, text, entry["text"])
    texts = [text for _, text, _ in exchanges]
    out, i = [], 0
    while i < len(exchanges):
        k, repeats = _repeated_block(texts, i)
        out += [_exchange_line(*exchanges[j]) for j in range(i, i + k)]
        if repeats >= FOLD_MIN_REPEATS:
            end = exchanges[i + repeats * k - 1][0]
            what = "the command above" if k == 1 else f"the {k} commands above"
            out.append(f"{'':>9}  ... {what} sent {repeats} times in all, until {_clock(end)}")
            i += repeats * k
        else:
            i += k
    return out


def _repeated_block(texts: Sequence[str], i: int) -> tuple[int, int]:
    """The shortest block starting at `i` that repeats back to back at least FOLD_MIN_REPEATS times, and
    how often; (1, 1) when none does."""
    for k in range(1, FOLD_MAX_BLOCK + 1):
        block = texts[i : i + k]
        if len(block) < k:
            break
        repeats = 1
        while texts[i + repeats * k : i + (repeats + 1) * k] == block:
            repeats += 1
        if repeats >= FOLD_MIN_REPEATS:
            return k, repeats
    return 1, 1


def _exchange_line(t: float, text: str, reply: str | None) -> str:
    shown = reply if reply is None or len(reply) <= 60 else f"{reply[:57]}..."
    return f"{_clock(t):>9}  {text}" + (f"  -> {shown}" if reply is not None else "")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for size, name in ((86400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {name}"
    return f"{seconds:.0f} s"
