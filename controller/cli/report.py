"""`closedloop report CAMPAIGN.sqlite [-o report.html]`, and the report `run`/`resume` write at the end."""

from __future__ import annotations

from pathlib import Path

import click

from closedloop.controller.cli.errors import configure_runtime, handle_errors
from closedloop.controller.report.html import default_report_path, write_report


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MB"


@click.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML file to write (default: the campaign file's name with .html).")
@handle_errors
def report(campaign_file: str, output: str | None) -> None:
    """Write one self-contained HTML report of CAMPAIGN_FILE (works offline; the campaign is opened read-only)."""
    if not Path(campaign_file).exists():
        raise FileNotFoundError(f"{campaign_file}: no such campaign file")
    configure_runtime()
    target = write_report(campaign_file, output or default_report_path(campaign_file))
    click.echo(f"wrote {target} ({_size(target)})")


def report_at_end(campaign_path: Path, *, enabled: bool, err: bool = False) -> None:
    """After `run`/`resume`: write `<campaign>.html` and print its path. A report that cannot be built
    is a warning, never a failed campaign: the data are safe in the campaign file either way."""
    if not enabled:
        return
    try:
        target = write_report(campaign_path)
    except KeyboardInterrupt:  # a second Ctrl-C while the report is built: the operator wants out
        click.echo(f"report skipped; write it later with: closedloop report {campaign_path}", err=True)
        return
    except Exception as exc:  # noqa: BLE001 - the campaign's outcome must not depend on its report
        click.echo(f"report not written ({type(exc).__name__}: {exc}); try: closedloop report {campaign_path}", err=True)
        return
    click.echo(f"report: {target}", err=err)
