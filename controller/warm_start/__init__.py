"""Warm starts: earlier results (a CSV file, a literature table, another campaign file) added to a campaign
as `warm_start` trials, with where each came from.

    target = Target.of(protocol, measured_units)
    source = read_csv(Path("earlier.csv"), target)      # or read_campaign(Path("old.sqlite"), target, store)
    imported = record(store, source, target.measured_units, note="our 2023 films")   # every row or none

`Campaign.import_csv` / `import_campaign` do this; `closedloop import` prints what they return.

Every row is checked against the campaign before anything is stored: conditions are converted to the
space's units (a cell "423 K" or a header "anneal_temp [K]"), choices matched, measured values follow the
rules of `tell`. A row outside the space (a range, an int grid, a fixed value, a linear constraint) is kept
and flagged; `controller.engine.history` decides what the planner makes of it.
"""

from closedloop.controller.warm_start.check import ImportRow, Target, WarmStartError
from closedloop.controller.warm_start.record import Imported, ImportSource, record, warm_start_records
from closedloop.controller.warm_start.sources import read_campaign, read_csv

__all__ = [
    "ImportRow",
    "ImportSource",
    "Imported",
    "Target",
    "WarmStartError",
    "read_campaign",
    "read_csv",
    "record",
    "warm_start_records",
]
