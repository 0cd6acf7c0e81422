"""Recording a checked source as `warm_start` trials, all in one transaction, and reading their provenance.

Each imported row becomes a trial born `dispatched` (origin `warm_start`, proposer `import`) and measured or
failed right after, with a `warm_start` journal entry holding its provenance: the source file and its
sha256, the CSV line or source trial id, the import time, the note, and why it lies outside the space if
it does. One `import` entry per import sums it up and is what a second import of the same source meets:
the same CSV file (by sha256) is refused whole; a campaign file brings only the results it did not bring
before (a campaign keeps growing, and its earlier results must not enter twice).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.reads import CampaignReads
from closedloop.controller.warm_start.check import ImportRow, ImportSource, WarmStartError
from closedloop.drivers.base import Measurement

PROPOSER = "import"
ANALYSIS_VERSION = "1"


@dataclass(frozen=True)
class Imported:
    source: ImportSource
    rows: list[ImportRow]  # those recorded (a campaign source: without the results imported before)
    trials: list[int]  # their trial ids, in the same order
    already: int = 0  # a campaign source's results left out because an earlier import brought them

    @property
    def outside(self) -> int:
        return sum(bool(r.outside_space) for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rows)


def record(store: CampaignStore, source: ImportSource, units: Mapping[str, str], *, note: str = "") -> Imported:
    """Store every new row of `source` as a warm-start trial (values in `units`), or none of them."""
    previous = [e for e in store.events(kinds=["import"]) if (e["data"] or {}).get("key") == source.key]
    rows, already = source.rows, 0
    if previous and source.kind == "csv":
        first = previous[0]
        raise WarmStartError(
            f"{source.path}: this file (sha256 {source.sha256[:12]}...) was imported already on {_when(first['t'])} "
            f"as trials {_span(first['data'].get('trials') or [])}; a file is imported once (nothing changed)"
        )
    if previous:
        done = {tid for e in previous for tid in e["data"].get("source_trials") or []}
        rows = [r for r in source.rows if r.source_trial not in done]
        already = len(source.rows) - len(rows)
        if not rows:
            raise WarmStartError(f"{source.path}: its {len(source.rows)} results were imported already (last on "
                                 f"{_when(previous[-1]['t'])}); nothing new to import (nothing changed)")
    now = time.time()
    stamp = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="seconds")
    provenance = {"source": str(source.path.resolve()), "kind": source.kind, "sha256": source.sha256,
                  "imported_at": stamp, "note": note}
    trials: list[int] = []
    with store.batch():
        for row in rows:
            trial_id = store.add_trial(row.conditions, proposer=PROPOSER, origin="warm_start", state="dispatched")
            store.record_event("warm_start", trial_id=trial_id, detail=f"imported from {row.where}", data={
                **provenance, "line": row.line, "source_trial": row.source_trial,
                "outside_space": list(row.outside_space),
            })
            store.record_measurement(trial_id, Measurement(
                values=dict(row.values),
                units={name: units[name] for name in row.values},
                status="failed_sample" if row.failed else "ok",
                analysis=PROPOSER,
                analysis_version=ANALYSIS_VERSION,
                instrument=f"{PROPOSER}:{source.path.name}",
                detail=_detail(row, note),
            ))
            trials.append(trial_id)
        store.record_event("import", detail=f"{len(rows)} earlier result(s) from {source.path.name} as warm-start "
                                            f"trials {_span(trials)}", data={
            **provenance, "key": source.key, "trials": trials,
            "source_trials": [r.source_trial for r in rows if r.source_trial is not None],
            "outside_space": sum(bool(r.outside_space) for r in rows), "ignored": list(source.ignored),
            "skipped": list(source.skipped), "already_imported": already,
        })
    return Imported(source, rows, trials, already)


def warm_start_records(store: CampaignReads) -> dict[int, dict]:
    """Trial id -> the provenance of each warm-start trial (see `record`)."""
    return {e["trial_id"]: e["data"] or {} for e in store.events(kinds=["warm_start"]) if e["trial_id"] is not None}


def _detail(row: ImportRow, note: str) -> str:
    parts = [f"imported from {row.where}"]
    if note:
        parts.append(note)
    if row.outside_space:
        parts.append("outside the space: " + "; ".join(row.outside_space))
    return "; ".join(parts)


def _span(ids: list[int]) -> str:
    if not ids:
        return "-"
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")
