"""`closedloop import`: earlier results (a CSV file, a literature table, another campaign) as warm-start trials."""

from __future__ import annotations

import click

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.cli.errors import handle_errors
from closedloop.controller.warm_start import Imported

SHOWN_OUTSIDE = 5  # rows outside the space listed one by one; the rest are counted
SHOWN_IGNORED = 6  # ignored columns named (a literature table may have dozens)


@click.command("import")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="A CSV file: one column per parameter and objective (units in cells or headers), optional status.")
@click.option("--from", "campaign_path", type=click.Path(dir_okay=False),
              help="Another campaign file: its measured and failed trials.")
@click.option("--note", default="", help="Why these results belong here (journaled with each imported trial).")
@handle_errors
def import_command(campaign_file: str, csv_path: str | None, campaign_path: str | None, note: str) -> None:
    """Add earlier results to CAMPAIGN_FILE as warm-start trials, from a CSV file or another campaign."""
    if (csv_path is None) == (campaign_path is None):
        raise BadInput("give the earlier results with --csv FILE or --from CAMPAIGN_FILE (one of them)")
    with Campaign.open(campaign_file, writer=True) as c:
        done = c.import_csv(csv_path, note=note) if csv_path else c.import_campaign(str(campaign_path), note=note)
        budget = c.protocol.budget.trials
    for line in summary(done, budget):
        click.echo(line)


def summary(done: Imported, budget: int) -> list[str]:
    source = done.source
    measured = len(done.rows) - done.failed
    lines = [f"imported {len(done.rows)} earlier result(s) from {source.path.name} (sha256 {source.sha256[:12]}) "
             f"as warm-start trials {_span(done.trials)}: {measured} measured, {done.failed} failed"]
    if done.already:
        lines.append(f"  {done.already} result(s) of it were imported before and are not imported again")
    outside = [r for r in done.rows if r.outside_space]
    if outside:
        lines.append(f"  {len(outside)} outside the search space, kept and flagged (see the report):")
        lines += [f"    {r.where}: {'; '.join(r.outside_space)}" for r in outside[:SHOWN_OUTSIDE]]
        if len(outside) > SHOWN_OUTSIDE:
            lines.append(f"    ... and {len(outside) - SHOWN_OUTSIDE} more")
    if source.ignored:
        what = "columns" if source.kind == "csv" else "parameters of that campaign"
        shown = ", ".join(source.ignored[:SHOWN_IGNORED])
        more = f" and {len(source.ignored) - SHOWN_IGNORED} more" if len(source.ignored) > SHOWN_IGNORED else ""
        lines.append(f"  ignored {what}: {shown}{more}")
    if source.skipped:
        lines.append(f"  left out: {', '.join(source.skipped)}")
    lines.append(f"the planner uses them from the next proposal; they do not count against the budget of {budget} trials")
    return lines


def _span(ids: list[int]) -> str:
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
