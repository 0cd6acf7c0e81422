"""CLI commands that create, run and inspect campaigns: init, run, resume, status, ask, tell, export.

Each command is a few lines over `controller.campaign.Campaign`. Exit codes: 0 ok, 1 the campaign or
instrument failed (or paused on a fault), 2 bad input, 130 paused by the operator (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Literal

import click

from closedloop.controller.campaign import TIME_SCALE_IN_PROCESS, BadInput, Campaign
from closedloop.controller.cli.approval import TerminalApprover
from closedloop.controller.cli.errors import configure_runtime, handle_errors
from closedloop.controller.cli.progress import ProgressReporter
from closedloop.controller.cli.signals import pause_on_signals
from closedloop.controller.engine.engine import HANDED_OUT_BEFORE
from closedloop.controller.engine.operator import Approver
from closedloop.controller.protocol.limits import unchecked_warning
from closedloop.controller.protocol.model import Protocol, load_protocol
from closedloop.controller.store.errors import StorageFailed, StoreError
from closedloop.simulators.registry import emulator_name

Approving = Literal["terminal", "dashboard"] | None  # where the operator decides proposals (--approve-from)
APPROVE_FROM = click.option(
    "--approve-from", type=click.Choice(["terminal", "dashboard"]),
    help="Where the operator accepts, edits or skips each proposal: at this terminal (as --approve) or on the "
         "dashboard (`closedloop serve`, with its control token).")


def _approving(approve: bool, approve_from: str | None) -> Approving:
    if approve and approve_from == "dashboard":
        raise BadInput("--approve answers at this terminal and --approve-from dashboard on the dashboard: give one")
    return "dashboard" if approve_from == "dashboard" else "terminal" if approve or approve_from else None


def _require_operator(protocol: Protocol, approving: Approving) -> None:
    if protocol.approval_mode != "none" and approving is None:
        raise BadInput(
            f"protocol {protocol.name!r} asks the operator to approve proposals (approval: {protocol.approval_mode}); "
            "add --approve to answer at this terminal (or --approve-from dashboard to answer on `closedloop serve`), "
            "or set `approval: none` in a copy of the protocol"
        )
    if approving == "dashboard" and protocol.needs_operator():
        raise BadInput(f"protocol {protocol.name!r} has results entered by hand at this terminal, so its proposals "
                       "are approved there too: use --approve")


def _check_link(port: str | None, time_scale: float | None, sim: bool, *, line: bool = False) -> None:
    """`line`: a workflow, whose steps name their own connections (emulators too): --time-scale alone."""
    if port is not None and sim:
        raise BadInput("--port and --sim exclude each other: --port talks to an instrument (or an emulator) on a "
                       "real port, --sim simulates it in this process")
    if time_scale is not None and port is None and not line:
        raise BadInput("--time-scale paces the controller with an emulator (`closedloop emulate MODEL --pty "
                       "--time-scale N`); give that emulator's port with --port too")
    if time_scale is not None and port is not None and emulator_name(port):
        raise BadInput(TIME_SCALE_IN_PROCESS)
    if port is not None and port.startswith("/") and not os.path.exists(port):
        # Caught here, a typo or an emulator since restarted on another pty costs no trials.
        raise BadInput(f"instrument port {port}: no such device; check the path (an emulator prints its own: "
                       "`listening on /dev/pts/N`) and give it with --port")


def _link_header(campaign: Campaign, port: str | None, time_scale: float | None, source: str) -> None:
    if port is None:
        return
    pace = f"; clock x{time_scale:g} (emulator time scale)" if time_scale is not None else ""
    click.echo(f"instrument: {campaign.protocol.the_instrument().driver} at {port} ({source}){pace}", err=True)


def _run_engine(
    campaign: Campaign,
    action: Literal["run", "resume"],
    *,
    sim: bool,
    approving: Approving,
    quiet: bool,
    port: str | None = None,
    time_scale: float | None = None,
    report: bool = True,
) -> None:
    from closedloop.controller.cli.report import report_at_end  # plotly loads only when a report is written

    configure_runtime()
    warning = unchecked_warning(campaign.protocol)
    if warning is not None:  # even with --quiet: the operator must know nothing limits these values
        click.echo(f"WARNING: {warning}", err=True)
    status = campaign.status()
    problem = campaign.protocol.to_problem()
    # The operator at this terminal approves proposals (--approve) and, for an instrument run by hand,
    # enters every result when its driver asks.
    at_terminal = approving == "terminal" or campaign.protocol.needs_operator()
    operator: Approver | None = TerminalApprover(problem) if at_terminal else None
    if approving == "dashboard":
        operator = campaign.remote_operator()
        click.echo(f"proposals wait for a decision on the dashboard: closedloop serve {campaign.store.path.parent}",
                   err=True)
    stored_best = (status["best"] or {}).get("values", {}).get(problem.objectives[0].name)
    reporter = ProgressReporter(problem, status["budget"], status["results"], quiet=quiet, best=stored_best,
                                prompts=at_terminal, units=campaign.protocol.parameter_units())
    path = campaign.store.path
    go = campaign.run if action == "run" else campaign.resume
    try:
        with pause_on_signals(), reporter:
            # --approve shows the operator every proposal: on an `approval: none` protocol too
            halt = go(sim=sim, approver=operator, on_event=reporter, port=port, time_scale=time_scale,
                      approve_every=approving is not None and campaign.protocol.approval_mode == "none")
    except StorageFailed as exc:
        # Try to say why in the file (a small write may still fit); if not, `status` finds its writer gone.
        with contextlib.suppress(StoreError):
            campaign.store.set_status("paused", stop_reason=f"paused: the campaign file could not be written ({exc.reason})")
        raise
    finally:
        campaign.close()
    if halt.paused:
        click.echo(f"{halt.headline}\ncampaign file: {path}\ncontinue with: closedloop resume {path}", err=True)
        report_at_end(path, enabled=report, err=True)
    else:
        click.echo(halt.headline)
        click.echo(f"campaign file: {path}")
        report_at_end(path, enabled=report)
    sys.exit(halt.exit_code)


def _refuse_existing(db: str | None, command: str) -> None:
    if db is not None and os.path.lexists(db):
        raise BadInput(f"--db {db}: a file already exists there, and `{command}` never overwrites one. To continue "
                       f"that campaign: closedloop resume {db}; to start a new one, give --db another path")


@click.command()
@click.argument("protocol", type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(dir_okay=False), help="Campaign file to create (default campaigns/NAME-TIME.sqlite).")
@click.option("--seed", type=int, help="Override the protocol's planner seed.")
@handle_errors
def init(protocol: str, db: str | None, seed: int | None) -> None:
    """Create the campaign file of PROTOCOL without touching any instrument, to ask/tell or resume."""
    _refuse_existing(db, "init")
    with Campaign.create(protocol, db, seed=seed) as campaign:
        path, p = campaign.store.path, campaign.protocol
        values = " ".join(f"{name}=..." for name in campaign.measured_units())
    click.echo(f"created {path}: campaign {p.name} ({p.budget.trials} trials); no instrument was touched")
    click.echo("next: propose a trial, run it, record its result (--failed if the sample failed, --note TEXT for why):")
    click.echo(f"  closedloop ask {path}")
    click.echo(f"  closedloop tell {path} --trial 1 {values}")
    click.echo("or be prompted for each trial at this terminal:" if p.needs_operator()
               else "or run it on its instrument:")
    click.echo(f"  closedloop resume {path}")


@click.command()
@click.argument("protocol", type=click.Path(dir_okay=False))
@click.option("--db", type=click.Path(dir_okay=False), help="Campaign file to create (default campaigns/NAME-TIME.sqlite).")
@click.option("--sim", is_flag=True, help="Run against the instrument's simulator, in virtual time.")
@click.option("--approve", is_flag=True, help="Show each proposal to the operator to accept, edit or skip.")
@APPROVE_FROM
@click.option("--seed", type=int, help="Override the protocol's planner seed.")
@click.option("--quiet", is_flag=True, help="Only print faults and the final result.")
@click.option("--port", help="Talk to the instrument here instead of the protocol's `connection` "
              "(a device path such as /dev/pts/5 from `closedloop emulate`, or a pyserial URL).")
@click.option("--time-scale", type=float, help="With an emulator's --port: run the controller's clock this many "
              "times faster, as the emulator was started (`closedloop emulate MODEL --time-scale N`).")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report (<campaign>.html) at the end.")
@handle_errors
def run(protocol: str, db: str | None, sim: bool, approve: bool, approve_from: str | None, seed: int | None,
        quiet: bool, port: str | None, time_scale: float | None, no_report: bool) -> None:
    """Run a campaign from PROTOCOL until a stop rule fires."""
    _refuse_existing(db, "run")
    approving = _approving(approve, approve_from)
    parsed = load_protocol(protocol)
    _check_link(port, time_scale, sim, line=parsed.is_line)
    _require_operator(parsed, approving)
    campaign = Campaign.create(protocol, db, seed=seed, sim=sim, port=port)
    click.echo(f"campaign file: {campaign.store.path}", err=True)
    _link_header(campaign, port, time_scale, "--port")
    _run_engine(campaign, "run", sim=sim, approving=approving, quiet=quiet, port=port, time_scale=time_scale,
                report=not no_report)


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--sim", is_flag=True, help="Continue against the instrument's simulator.")
@click.option("--approve", is_flag=True, help="Show each proposal to the operator to accept, edit or skip.")
@APPROVE_FROM
@click.option("--quiet", is_flag=True)
@click.option("--port", help="Talk to the instrument here (default: the port of the campaign's last --port run, "
              "else the protocol's `connection`).")
@click.option("--time-scale", type=float, help="With an emulator's --port: its --time-scale (default: the one recorded "
              "with that port).")
@click.option("--no-report", is_flag=True, help="Do not write the HTML report (<campaign>.html) at the end.")
@handle_errors
def resume(campaign_file: str, sim: bool, approve: bool, approve_from: str | None, quiet: bool, port: str | None,
           time_scale: float | None, no_report: bool) -> None:
    """Reconcile interrupted trials of CAMPAIGN_FILE and continue it."""
    approving = _approving(approve, approve_from)
    campaign = Campaign.open(campaign_file, writer=True)
    try:
        _require_operator(campaign.protocol, approving)
        linked_port, linked_scale = campaign.live_link(port, time_scale, sim=sim)
        _check_link(linked_port, linked_scale, sim, line=campaign.protocol.is_line)
    except BadInput:
        campaign.close()
        raise
    _link_header(campaign, linked_port, linked_scale, "--port" if port else "from the campaign's last run")
    _run_engine(campaign, "resume", sim=sim, approving=approving, quiet=quiet, port=port, time_scale=time_scale,
                report=not no_report)


def _clock(t: float | None) -> str:
    if t is None:
        return "never"
    when = datetime.fromtimestamp(t)
    return when.strftime("%H:%M" if when.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


def _status_line(s: dict, campaign_file: str) -> str:
    """The status, and for a running one whether its writer is alive: a killed run must not read `running`."""
    writer = s["writer"]
    who = f"pid {writer['pid']} on {writer['host']}" if writer["pid"] is not None else "writer unknown"
    if s["status"] == "interrupted":
        return (f"interrupted (writer gone; last heard {_clock(s['last_heard'])}, {who}) - resume with "
                f"closedloop resume {campaign_file}")
    if s["status"] == "idle":
        return (f"idle (no process is running it; last heard {_clock(s['last_heard'])}) - run it with closedloop "
                f"resume {campaign_file}, or record results by hand with ask/tell")
    if s["status"] == "running":
        if writer["alive"] is None:
            return "running (cannot tell whether its writer is alive: the lock file cannot be read)"
        since = f" since {_clock(writer['since'])}" if writer["since"] is not None else ""
        return f"running ({who}{since}; last heard {_clock(s['last_heard'])})"
    return s["status"] + (f" - {s['stop_reason']}" if s["stop_reason"] else "")


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status(campaign_file: str, as_json: bool) -> None:
    """Counts by state, best so far, stop reason and the last events of CAMPAIGN_FILE."""
    with Campaign.open(campaign_file) as c:
        s = c.status()
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
        return
    click.echo(f"{s['name']}  ({s['campaign']})")
    click.echo(f"status: {_status_line(s, campaign_file)}")
    imported = f" (+{s['warm_start']} earlier, imported as warm start)" if s.get("warm_start") else ""
    click.echo(f"results: {s['results']} of {s['budget']}{imported}; trials by state: "
               + ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items())))
    if s.get("fidelities"):
        spent = s["fidelities"]
        of = f" of {spent['budget_hours']:g} h" if spent["budget_hours"] is not None else ""
        click.echo(f"instrument time: {spent['spent_hours']:.4g} h{of} at the declared costs ("
                   + ", ".join(f"{f['name']} {f['results']} x {f['cost_hours']:.3g} h" for f in spent["sources"]) + ")")
    if s["best"]:
        values = ", ".join(f"{k}={v:.6g}" for k, v in s["best"]["values"].items())
        cond = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["best"]["conditions"].items())
        click.echo(f"best: {values}\n  at {cond}")
    feasibility = s["outcome_constraints"]
    if feasibility is not None:  # "best" is the best feasible trial: say how many there are
        each = "; ".join(f"{c['constraint']}: {c['met']}" for c in feasibility["constraints"])
        click.echo(f"feasible: {feasibility['feasible']} of {feasibility['measured']} measured trials meet every "
                   f"outcome constraint ({each})")
    click.echo("last events:")
    for e in s["last_events"]:
        trial = f" trial {e['trial_id']}" if e.get("trial_id") else ""
        change = f" {e['from_state'] or ''}->{e['to_state']}" if e.get("to_state") else ""
        click.echo(f"  {e['kind']}{trial}{change} {e.get('detail') or ''}".rstrip())


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("-n", "n", type=int, default=1, show_default=True, help="How many trials.")
@click.option("--new", is_flag=True, help="Propose N new trials even though trials handed out earlier still wait "
              "for a result (they are passed to the planner as pending). Without it, those come first.")
@click.option("--force", is_flag=True, help="Hand out trials although a stop rule fired (budget, wall time, target, "
              "no improvement) or the budget has no room for them.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@handle_errors
def ask(campaign_file: str, n: int, new: bool, force: bool, fmt: str) -> None:
    """Hand out N trials to run by hand; they are recorded as pending until `tell`.

    Trials handed out earlier with no result told are offered again first (--new proposes new ones in
    addition); abandoned initial-design points come back before the design moves on. After a stop rule
    fired, ask says which and exits 1 (--force hands out trials anyway)."""
    configure_runtime()
    with Campaign.open(campaign_file, writer=True) as c:
        offers = c.ask(n, new=new, force=force)
        names = c.protocol.to_problem().space.names
        sources = bool(c.protocol.fidelities)
    for offer in offers:  # diagnostics on stderr: stdout stays the table, JSON or CSV of the trials
        if offer.again is not None:
            click.echo(f"trial {offer.trial}: offered again: {offer.again}", err=True)
    if any(o.again == HANDED_OUT_BEFORE for o in offers):
        click.echo("(ask --new proposes new trials in addition to the pending ones)", err=True)
    # With fidelities each trial says which source measures it (the target when the planner did not choose).
    target = next((name for name, f in (c.protocol.fidelities or {}).items() if f.target), None)
    rows = [{"trial": o.trial, **({"fidelity": o.fidelity or target} if sources else {}), **o.conditions} for o in offers]
    columns = ["trial", *(["fidelity"] if sources else []), *names]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    else:
        # Rounded for reading; --format json/csv give the exact values the campaign stores.
        for r in rows:
            click.echo(f"trial {r['trial']}: " + "  ".join(
                f"{k}={r[k]:.6g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in columns[1:]))


def _parse_assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"{pair!r}: expected name=value, e.g. phi_sum_mu_max=3.2e-4 or tau_half='120 ns'")
        values[name.strip()] = raw.strip()
    return values


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.argument("values", nargs=-1)
@click.option("--trial", "trial_id", type=int, help="The trial the values belong to.")
@click.option("--failed", is_flag=True, help="The sample failed (no usable values): kept as data for the planner.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True), help="CSV with a `trial` column and one column per value.")
@click.option("--note", default="", help="Why the sample failed, or any remark: stored with the result (with --csv, with each row).")
@handle_errors
def tell(campaign_file: str, values: tuple[str, ...], trial_id: int | None, failed: bool, csv_path: str | None,
         note: str) -> None:
    """Record results measured by hand: `--trial ID name=value ...` or `--csv results.csv`."""
    if csv_path and (values or trial_id is not None or failed):
        raise BadInput("--csv takes the results from the file: drop --trial, --failed and name=value")
    if not csv_path and trial_id is None:
        raise BadInput("give --trial ID with name=value pairs, or --csv FILE")
    assignments = _parse_assignments(values)
    with Campaign.open(campaign_file, writer=True) as c:
        if csv_path:
            recorded = c.tell_csv(csv_path, note=note.strip())
        else:
            assert trial_id is not None
            c.tell(trial_id, assignments, failed=failed, note=note.strip())
            recorded = 1
    click.echo(f"recorded {recorded} result(s) in {campaign_file}")


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file (default next to the campaign).")
@handle_errors
def export(campaign_file: str, fmt: str, output: str | None) -> None:
    """One tidy row per trial (conditions, objectives, status, timestamps, proposer) + a JSON sidecar."""
    from closedloop.controller.store.export import export_campaign

    out = Path(output) if output else Path(campaign_file).with_suffix(f".{fmt}")
    with Campaign.open(campaign_file) as c:
        table, sidecar = export_campaign(c.store, out, "parquet" if fmt == "parquet" else "csv")
    click.echo(f"wrote {table}\nwrote {sidecar}")
