"""A campaign report: one self-contained HTML file (plotly's JavaScript inlined once, no network).

    >>> write_report("opv.sqlite")                   # next to the campaign file
    PosixPath('opv.html')
    >>> html = build_report("opv.sqlite")            # an open CampaignStore works too
    >>> html.startswith("<!DOCTYPE html>"), "opv-blend-trmc" in html
    (True, True)

Sections: header (protocol and its hash, instrument, planner, dates, stop reason, versions), progress,
objectives vs parameters, parallel coordinates, Pareto front and hypervolume, the model's view, the
instrument's raw data, timing, the schedule (once any sample ran: a Gantt chart of every sample on every
station, utilization, the bottleneck, films per day), the trial table and every failure, fault, refusal
and operator decision.
Every piece of user text (protocol names, notes, replies) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from closedloop.controller.engine import history
from closedloop.controller.protocol.instruments import instrument_location, run_by_hand
from closedloop.controller.protocol.sections import InstrumentSection
from closedloop.controller.protocol.workflow import Step
from closedloop.controller.report.data import (
    NOTABLE_EVENTS,
    ReportData,
    constraint_summary,
    feasibility_label,
    load_report_data,
    timestamp,
)
from closedloop.controller.report.fidelity import fidelity_blocks
from closedloop.controller.report.figures import (
    Block,
    Plot,
    loo_plot,
    model_slices_plot,
    objectives_vs_parameters_plot,
    parallel_coordinates_plot,
    pareto_plot,
    progress_plot,
    timing_plot,
)
from closedloop.controller.report.instruments import instrument_blocks
from closedloop.controller.report.model_view import model_view
from closedloop.controller.report.schedule import schedule_of
from closedloop.controller.report.schedule.gantt import gantt_plot, time_unit
from closedloop.controller.report.schedule.text import summary_lines
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.errors import OutputPathError
from closedloop.controller.store.output import check_output_path, write_atomically
from closedloop.controller.store.reads import CampaignReads, TrialRecord

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta th { width: 12em; } .no-data { color: #a05a00; font-style: italic; } .caption { color: #555; }
.state-failed, .state-abandoned, .state-rejected { background: #fff1f0; }
.scroll { overflow-x: auto; } code { font-size: 0.9em; }
"""


def default_report_path(campaign_path: str | os.PathLike[str]) -> Path:
    """`<campaign>.html` next to the campaign file."""
    return Path(campaign_path).with_suffix(".html")


def build_report(source: str | os.PathLike[str] | CampaignReads) -> str:
    """The report of a campaign (a path, opened read-only, or an open store) as one HTML document."""
    if isinstance(source, CampaignReads):
        return _render(source)
    with CampaignStore.open(source) as store:
        return _render(store)


def write_report(source: str | os.PathLike[str] | CampaignReads, output: str | os.PathLike[str] | None = None) -> Path:
    """Write the report (default `<campaign>.html`) atomically and return its path."""
    campaign_path = source.path if isinstance(source, CampaignReads) else Path(source)
    target = Path(output) if output is not None else default_report_path(campaign_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(target, f"cannot create the folder {target.parent} ({exc.strerror}); "
                                      "write the report to another path") from None
    check_output_path(target, campaign_path)
    document = build_report(source)
    write_atomically(target, lambda partial: partial.write_text(document, encoding="utf-8"))
    return target


# ---- assembly ---------------------------------------------------------------------------------------------


def _render(store: CampaignReads) -> str:
    data = load_report_data(store)
    view = model_view(data)
    sections: list[tuple[str, list[Block] | str]] = [
        ("Progress", [progress_plot(data)]),
        ("Objectives and parameters", [objectives_vs_parameters_plot(data), parallel_coordinates_plot(data)]),
    ]
    if len(data.objectives) > 1:
        sections.append(("Several objectives", [pareto_plot(data)]))
    model_blocks: list[Block] = [model_slices_plot(data, view), loo_plot(data, view)]
    sections += [
        ("The model's view", model_blocks),
        ("Instrument data", instrument_blocks(store, data)),
        ("Timing", [timing_plot(data)]),
        *_schedule_section(data),
        *_fidelity_section(data),
        ("Trials", _trial_table(data)),
        ("Failures, faults, refusals and operator decisions", _incidents(data)),
    ]
    body = [_header(data, view.notes)]
    for title, content in sections:
        body.append(f"<section><h2>{_e(title)}</h2>")
        body.append(content if isinstance(content, str) else "\n".join(_block(b) for b in content))
        body.append("</section>")
    title = f"closedloop report: {data.info['name']}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        # Inlined once for every figure on the page: the report must open offline, years from now.
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _block(block: Block) -> str:
    if isinstance(block, Plot):
        figure = block.figure.to_html(full_html=False, include_plotlyjs=False, div_id=block.id, config=PLOT_CONFIG)
        caption = f"<p class=\"caption\">{_e(block.caption)}</p>" if block.caption else ""
        return f"<h3>{_e(block.title)}</h3><div class=\"report-plot\" data-plot=\"{_e(block.id)}\">{figure}</div>{caption}"
    return f"<h3>{_e(block.title)}</h3><p class=\"no-data\">{_e(block.text)}</p>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]], row_classes: Iterable[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    classes = list(row_classes) if row_classes is not None else None
    lines = []
    for i, row in enumerate(rows):
        cells = "".join(
            f"<td class=\"num\">{_e(_fmt(v))}</td>" if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{_e(_fmt(v))}</td>"
            for v in row
        )
        cls = f" class=\"{_e(classes[i])}\"" if classes else ""
        lines.append(f"<tr{cls}>{cells}</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"


# ---- header ---------------------------------------------------------------------------------------------


def _instrument(section: InstrumentSection) -> str:
    where = instrument_location(section)
    return f"{section.driver}, {where}" if run_by_hand(section) else f"{section.driver} at {where}"


def _step(step: Step) -> str:
    """One step of a line, for the header: its instrument (or transfer), parameters and schedule."""
    where = _instrument(step.instrument) if step.instrument is not None else f"transfer by {step.transfer}"
    parts = [where, f"parameters: {', '.join(step.parameters) or 'none'}"]
    parts += [f"{step.stations} stations"] if step.stations > 1 else []
    parts += [f"max_wait {step.max_wait_s / 60:g} min"] if step.max_wait_s is not None else []
    parts += [] if step.repeatable else ["lost if a crash interrupts it"]
    return "; ".join(parts)


def _header(data: ReportData, model_notes: list[str]) -> str:
    info, protocol = data.info, data.protocol
    planner = protocol.planner
    counts: dict[str, int] = {}
    for t in data.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    rows = [
        ("protocol", f"{protocol.name} (version {protocol.version})"),
        ("protocol sha256", info["protocol_sha256"]),
        ("protocol file", info["protocol_path"]),
        ("campaign file", str(data.path)),
        *([("instrument", _instrument(protocol.instrument))] if protocol.instrument is not None else []),
        *[(f"step {step.name}", _step(step)) for step in (protocol.steps() if protocol.is_line else [])],
        ("planner", f"{planner.initial.n} initial ({planner.initial.method}), then acquisition {planner.acquisition}; "
                    f"batch {planner.batch_size}; seed {info['seed']}"
                    + (f"; options {json.dumps(planner.options, sort_keys=True)}" if planner.options else "")),
        ("objectives", ", ".join(f"{'maximize' if o.maximize else 'minimize'} {o.name}" for o in data.objectives)),
        *([("outcome constraints", constraints)] if (constraints := constraint_summary(data)) else []),
        ("budget", f"{protocol.budget.trials} trials" + (f", {protocol.budget.instrument_time / 3600:g} h instrument time"
                                                         if protocol.budget.instrument_time else "")),
        ("created", timestamp(info["created_at"])),
        ("stopped", timestamp(info["stopped_at"])),
        ("status", info["status"]),
        ("stop reason", info["stop_reason"] or "-"),
        ("trials", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"),
        ("software", ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))),
    ]
    meta = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    notes = data.notes + model_notes
    note_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    description = f"<p>{_e(protocol.description)}</p>" if protocol.description else ""
    return (f"<header><h1>{_e(info['name'])}</h1>{description}<table class=\"meta\">{meta}</table>"
            + (f"<ul class=\"notes\">{note_html}</ul>" if notes else "") + "</header>")


# ---- schedule -------------------------------------------------------------------------------------------


def _fidelity_section(data: ReportData) -> list[tuple[str, str]]:
    """What each source of the objective cost, the best target value against that cost, and the relation
    between the sources the planner learned; nothing for a campaign of one source."""
    if not data.problem.fidelities:
        return []
    spend = history.spend_by_source(data.problem, data.trials)
    rows = [[s.fidelity.name + (" (target)" if s.fidelity.target else ""), s.fidelity.measures, s.fidelity.cost,
             s.results, s.failed, s.in_flight, s.hours] for s in spend]
    total = sum(s.hours for s in spend)
    table = _table(["source", "measures", "cost each [h]", "results", "failed", "in flight", "spent [h]"], rows)
    note = f"<p>{total:.4g} h of instrument time spent in all, at the protocol's declared costs.</p>"
    return [("Fidelities and cost", table + note + "\n".join(_block(b) for b in fidelity_blocks(data)))]


def _schedule_section(data: ReportData) -> list[tuple[str, str]]:
    """The Gantt chart, each station's utilization and the line's bottleneck and rate; nothing for a
    campaign in which no sample ever started on a station."""
    spans, schedule = schedule_of(data.events, data.trials)
    if schedule is None:
        return []
    unit, size = time_unit(schedule.horizon_s)
    rows = [[u.step, u.station, u.spans, u.busy_s / size, f"{u.utilization:.1%}", u.longest_gap_s / size]
            for u in schedule.stations]
    table = _table(["step", "station", "spans", f"busy [{unit}]", "utilization", f"longest idle [{unit}]"], rows)
    lines = "".join(f"<li>{_e(line)}</li>" for line in summary_lines(schedule))
    return [("Schedule", _block(gantt_plot(spans, schedule)) + table + f"<ul class=\"schedule\">{lines}</ul>")]


# ---- tables ---------------------------------------------------------------------------------------------


def _trial_table(data: ReportData) -> str:
    if not data.trials:
        return "<p class=\"no-data\">no data: the campaign has no trials</p>"
    params = data.problem.space.names
    measured = list(dict.fromkeys([o.name for o in data.objectives] + [k for t in data.trials for k in t.values]))
    constrained = bool(data.problem.outcome_constraints)  # then a column says which trials meet them
    headers = ["trial", "state", "origin", "proposer", "design", *params, *measured,
               *(["feasible"] if constrained else []), "acquisition value", "planner [s]", "instrument [min]", "detail"]
    rows = []
    for t in data.trials:
        rows.append([
            t.id, t.state, _origin(data, t), t.proposer, data.design(t.id),
            *[t.conditions.get(p) for p in params], *[t.values.get(m) for m in measured],
            *([feasibility_label(data, t)] if constrained else []),
            data.acquisition_value(t.id), data.planner_time_s(t.id),
            None if t.duration_s is None else t.duration_s / 60.0, t.detail,
        ])
    return _table(headers, rows, [f"state-{t.state}" for t in data.trials])


def _origin(data: ReportData, t: TrialRecord) -> str:
    if t.retry_of:
        return f"{t.origin} of {t.retry_of}"
    return f"{t.origin} (outside the space)" if t.id in data.outside_space else t.origin


def _incidents(data: ReportData) -> str:
    parts = []
    failed = [t for t in data.trials if t.state == "failed"]
    parts.append("<h3>Failed samples</h3>")
    if failed:
        params = data.problem.space.names
        parts.append(_table(["trial", *params, "why"], [[t.id, *[t.conditions.get(p) for p in params], t.detail]
                                                         for t in failed]))
    else:
        parts.append("<p class=\"no-data\">none: every sample that ran gave a result</p>")
    lost = [t for t in data.trials if t.state in ("abandoned", "rejected")]
    parts.append("<h3>Abandoned and rejected trials</h3>")
    parts.append(_table(["trial", "state", "why"], [[t.id, t.state, t.detail] for t in lost]) if lost
                 else "<p class=\"no-data\">none</p>")
    events = data.notable_events()
    parts.append("<h3>Instrument faults, safety refusals, operator decisions and other journal entries</h3>")
    if events:
        rows = [[timestamp(e["t"]), None if e["virtual_t"] is None else e["virtual_t"] / 3600.0,
                 NOTABLE_EVENTS[e["kind"]], e["trial_id"], e["detail"], _event_data(e)] for e in events]
        parts.append(_table(["time", "virtual time [h]", "what", "trial", "detail", "data"], rows))
    else:
        parts.append("<p class=\"no-data\">none: no faults, refusals, operator decisions or planner errors</p>")
    return "\n".join(parts)


def _event_data(event: dict[str, Any]) -> str:
    data = event.get("data")
    if not data:
        return ""
    data = {k: v for k, v in data.items() if k != "traceback"}  # a traceback belongs in `status`, not a table cell
    return json.dumps(data, sort_keys=True, default=str)[:300]
