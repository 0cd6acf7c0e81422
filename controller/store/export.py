"""Tidy export of a campaign: one row per trial, plus a JSON sidecar that says what each column is.

    data, sidecar = export_campaign(store, "results.csv")   # also "results.parquet"

Columns: trial metadata, one column per process condition (named after the parameter), one per measured
property (current analysis), the acquisition value, and timestamps. The sidecar `<out>.json` records the
protocol text and sha256, the software versions, and each column's role ("process_condition",
"measured_property", "metadata") and unit. Floats in CSV are written in shortest round-trip (repr) form, so
`pandas.read_csv(path)` gets every value back bit for bit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from closedloop.controller.store.lifecycle import FINAL_STATES
from closedloop.controller.store.output import check_output_path, write_atomically
from closedloop.controller.store.reads import CampaignReads

ExportFormat = Literal["csv", "parquet"]
_SUFFIXES: dict[str, ExportFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

# Metadata columns around the conditions and measurements; name -> unit.
_LEADING = {"trial_id": "", "state": "", "origin": "", "proposer": "", "attempt": "", "retry_of": "",
            "instrument": "", "measurement_status": ""}
_TRAILING = {
    "acquisition_value": "",
    "created_at": "s (unix time)",
    "updated_at": "s (unix time)",
    "dispatched_at": "s (unix time)",
    "finished_at": "s (unix time)",
    "dispatched_virtual_t": "s (engine clock)",
    "finished_virtual_t": "s (engine clock)",
    "duration_s": "s",
    "detail": "",
}
_NULLABLE_INTS = ("trial_id", "attempt", "retry_of")


def export_campaign(
    store: CampaignReads,
    out_path: str | os.PathLike[str],
    format: ExportFormat | None = None,
    *,
    condition_units: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write the tidy table and its sidecar; returns (data path, sidecar path).

    `format` defaults to the file's suffix. `condition_units` (parameter -> unit) comes from the parsed
    protocol when the caller has it; otherwise units are read from the protocol text's `space` section.
    """
    out = Path(out_path)
    fmt = format or _SUFFIXES.get(out.suffix.lower())
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"{out}: cannot tell the export format; use a .csv or .parquet name or pass format=")
    check_output_path(out, store.path)
    campaign = store.campaign()
    table, columns = tidy_table(store, condition_units=condition_units)
    if fmt == "csv":
        write_atomically(out, lambda tmp: table.to_csv(tmp, index=False))
    else:
        write_atomically(out, lambda tmp: table.to_parquet(tmp, index=False, engine="pyarrow"))
    sidecar = out.with_name(out.name + ".json")
    document = {
        "campaign": campaign["name"],
        "campaign_file": str(store.path),
        "data_file": out.name,
        "format": fmt,
        "rows": len(table),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "status": campaign["status"],
        "stop_reason": campaign["stop_reason"],
        "seed": campaign["seed"],
        "protocol": {
            "path": campaign["protocol_path"],
            "sha256": campaign["protocol_sha256"],
            "text": campaign["protocol_text"],
        },
        "software_versions": campaign["versions"],
        "columns": columns,
    }
    if fmt == "csv":
        document["floats"] = "shortest round-trip (repr) form: parsing them back gives the exact same doubles"
    write_atomically(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    return out, sidecar


def tidy_table(
    store: CampaignReads, *, condition_units: dict[str, str] | None = None
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The campaign as one row per trial, and each column's role and unit (what `export` writes).
    `condition_units` (parameter -> unit) from the parsed protocol when the caller has it; otherwise
    they are read from the protocol text's `space` section."""
    if condition_units is None:
        condition_units = _units_from_protocol(store.campaign()["protocol_text"])
    trials = store.trials()
    condition_names = _first_seen(t.conditions for t in trials)
    measured_names = _first_seen(t.values for t in trials)
    measured_units: dict[str, set[str]] = {}
    for t in trials:
        for name, unit in t.units.items():
            measured_units.setdefault(name, set()).add(unit)

    columns: dict[str, dict[str, Any]] = {name: {"role": "metadata", "unit": unit} for name, unit in _LEADING.items()}
    condition_columns = {name: _free_name(name, "condition", columns, _TRAILING) for name in condition_names}
    for name, column in condition_columns.items():
        columns[column] = {"role": "process_condition", "unit": condition_units.get(name, ""), "name": name}
    measured_columns = {name: _free_name(name, "measured", columns, _TRAILING) for name in measured_names}
    for name, column in measured_columns.items():
        found = sorted(measured_units.get(name, {""}))
        columns[column] = {"role": "measured_property", "unit": found[0] if len(found) == 1 else found, "name": name}
    columns.update({name: {"role": "metadata", "unit": unit} for name, unit in _TRAILING.items()})

    milestones = _milestones(store)
    rows = []
    for t in trials:
        proposal = store.proposal(t.id)
        marks = milestones.get(t.id, {})
        row: dict[str, Any] = {
            "trial_id": t.id, "state": t.state, "origin": t.origin, "proposer": t.proposer,
            "attempt": t.attempt, "retry_of": t.retry_of, "instrument": t.instrument,
            "measurement_status": t.measurement_status,
        }
        row.update({column: t.conditions.get(name) for name, column in condition_columns.items()})
        row.update({column: t.values.get(name) for name, column in measured_columns.items()})
        row.update(
            acquisition_value=None if proposal is None else proposal.acquisition_value,
            created_at=t.created_at, updated_at=t.updated_at, duration_s=t.duration_s, detail=t.detail, **marks,
        )
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(columns))
    for name in _NULLABLE_INTS:
        table[name] = table[name].astype("Int64")  # keep ids integers even where some are missing
    for column in [*measured_columns.values(), *_TRAILING]:
        if column != "detail":
            table[column] = table[column].astype("float64")
    return table, columns


def _milestones(store: CampaignReads) -> dict[int, dict[str, float | None]]:
    """When each trial was first dispatched and when it reached a final state (wall and engine clock)."""
    marks: dict[int, dict[str, float | None]] = {}
    for event in store.events(kinds=["state"]):
        trial = marks.setdefault(event["trial_id"], {})
        if event["to_state"] == "dispatched" and "dispatched_at" not in trial:
            trial.update(dispatched_at=event["t"], dispatched_virtual_t=event["virtual_t"])
        if event["to_state"] in FINAL_STATES:
            trial.update(finished_at=event["t"], finished_virtual_t=event["virtual_t"])
    return marks


def _first_seen(mappings: Any) -> list[str]:
    names: dict[str, None] = {}
    for mapping in mappings:
        names.update(dict.fromkeys(mapping))
    return list(names)


def _free_name(name: str, prefix: str, *taken: dict) -> str:
    """The column name for a parameter or property; prefixed only if it would clash with a metadata column."""
    return f"{prefix}:{name}" if any(name in t for t in taken) else name


def _units_from_protocol(protocol_text: str) -> dict[str, str]:
    """Best effort: `space: {name: {unit: ...}}` from the stored protocol text; empty if it is not that shape."""
    try:
        document = YAML(typ="safe").load(protocol_text)
    except YAMLError:
        return {}
    space = document.get("space") if isinstance(document, dict) else None
    if not isinstance(space, dict):
        return {}
    return {str(name): str(spec["unit"]) for name, spec in space.items() if isinstance(spec, dict) and "unit" in spec}
