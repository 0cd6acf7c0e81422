"""`closedloop reanalyze CAMPAIGN`: recompute derived values from the stored raw records (TRMC transients,
J-V sweeps).

Exit codes as the other campaign commands: 0 done, 2 bad input (no such file, a campaign that is
being run by another process, or one without raw transients).
"""

from __future__ import annotations

import math

import click

from closedloop.controller.campaign import BadInput
from closedloop.controller.cli.errors import handle_errors
from closedloop.controller.offline.reanalyze import NoRawTransients, TrialReanalysis, reanalyze_campaign
from closedloop.controller.store.campaign_store import CampaignStore


def _value(values: dict[str, float], name: str) -> str:
    value = values.get(name)
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _row(result: TrialReanalysis) -> str:
    changes = "  ".join(
        f"{name} {_value(result.old_values, name)} -> {_value(result.new_values, name)}" for name in result.derives
    )
    status = f"{result.old_status or '-'} -> {result.new_status}"
    analysis = f"[{result.old_analysis or '?'} -> {result.new_analysis}]"
    note = f"  ({result.detail})" if result.detail else ""
    return f"trial {result.trial_id:>4}  {status:<28} {changes}  {analysis}{note}"


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--trial", "trial_ids", type=int, multiple=True, help="Only this trial (repeatable).")
@handle_errors
def reanalyze(campaign_file: str, trial_ids: tuple[int, ...]) -> None:
    """Recompute the derived values of CAMPAIGN_FILE from its raw records (TRMC transients, J-V sweeps) with
    the current analysis version; the previous values are kept, marked superseded.

    TRMC transients give phi_sum_mu_max and tau_half; J-V sweeps give pce, voc, jsc and ff."""
    try:
        with CampaignStore.open(campaign_file, writer=True) as store:
            results = reanalyze_campaign(store, trial_ids or None)
    except NoRawTransients as e:
        raise BadInput(str(e)) from None
    for result in results:
        click.echo(_row(result))
    done = sum(1 for r in results if not r.detail.startswith("not reanalyzed"))
    click.echo(f"reanalyzed {done} of {len(results)} trial(s) in {campaign_file}")
