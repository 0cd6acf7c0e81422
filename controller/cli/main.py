"""The `closedloop` command group. Exit codes: 0 ok, 1 campaign or instrument failure, 2 bad input,
130 paused by the operator.

Commands load when they are run: `closedloop --help` and `closedloop validate` never import what only
planning needs (torch, BoTorch), plotting (plotly) or the instrument drivers. A command is added with one
line in COMMANDS; its module holds the click command.
"""

from __future__ import annotations

import importlib

import click

from closedloop.version import __version__

# name -> (module, click command in it, the line `closedloop --help` shows). tests/cli checks that each
# line is the first sentence of the command's own help, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ask": ("campaign", "ask", "Hand out N trials to run by hand; they are recorded as pending until `tell`."),
    "bench": ("bench", "bench", "Replay planners against DATASET.csv, one row per experiment, and compare them with random sampling."),
    "emulate": ("emulate", "emulate", "Serve each simulated instrument MODEL (or the one standing in for --protocol's instrument) behind a pty or a TCP port until killed."),
    "export": ("campaign", "export", "One tidy row per trial (conditions, objectives, status, timestamps, proposer) + a JSON sidecar."),
    "import": ("warm_start", "import_command", "Add earlier results to CAMPAIGN_FILE as warm-start trials, from a CSV file or another campaign."),
    "init": ("campaign", "init", "Create the campaign file of PROTOCOL without touching any instrument, to ask/tell or resume."),
    "list": ("listing", "list_campaigns", "Every campaign file in FOLDER (default: here) with its status, progress, best result and last activity."),
    "reanalyze": ("reanalyze", "reanalyze", "Recompute the derived values of CAMPAIGN_FILE from its raw records (TRMC transients, J-V sweeps) with the current analysis version; the previous values are kept, marked superseded."),
    "replay": ("replay", "replay", "Audit CAMPAIGN: re-derive every recorded proposal from the recorded observations, seed and planner version, and report which match."),
    "report": ("report", "report", "Write one self-contained HTML report of CAMPAIGN_FILE (works offline; the campaign is opened read-only)."),
    "resume": ("campaign", "resume", "Reconcile interrupted trials of CAMPAIGN_FILE and continue it."),
    "run": ("campaign", "run", "Run a campaign from PROTOCOL until a stop rule fires."),
    "serve": ("serve", "serve", "Serve a live dashboard of the campaign files in FOLDER (default: here) and of each CAMPAIGN given."),
    "schema": ("schema", "schema", "Print the JSON Schema of protocol files (for editors), or with --reference the protocol reference page."),
    "status": ("campaign", "status", "Counts by state, best so far, stop reason and the last events of CAMPAIGN_FILE."),
    "tell": ("campaign", "tell", "Record results measured by hand: `--trial ID name=value ...` or `--csv results.csv`."),
    "validate": ("validate", "validate_command", "Check protocol files before any hardware moves: schema, units, safety envelope, constraint feasibility, objectives, budget and candidate table."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported when one is run (after click's documented pattern for
    lazily loading subcommands); `--help` lists them from COMMANDS without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"closedloop.controller.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _shortened(COMMANDS[name][2], limit)) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shortened(text: str, limit: int) -> str:
    """`text` cut at a word to fit `limit` characters, as click shortens a command's help."""
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="closedloop")
def main() -> None:
    """Closed-loop autonomous experiments: plan, run, record, replay."""
