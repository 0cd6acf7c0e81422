"""`closedloop validate --dry-run`: the real engine, safety gate and driver run a whole campaign against the
instrument's simulator in virtual time, before any hardware moves; the report says whether it would run
safely (refusals, faults, pauses), how long it would take, and what would be sent."""

from closedloop.controller.dryrun.report import DryRunReport, Finding
from closedloop.controller.dryrun.run import dry_run

__all__ = ["DryRunReport", "Finding", "dry_run"]
