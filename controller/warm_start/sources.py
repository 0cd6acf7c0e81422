"""Reading a warm-start source: a CSV file (an earlier table, a literature table) or another campaign file.

A CSV names a parameter or measured quantity per column, optionally with its unit in the header
(`anneal_temp [K]`, `anneal_temp (K)`); a cell may carry its own unit (`423 K`), which wins. A `status`
column (`failed` for a sample that gave no usable value) and a `trial` column (the row's id in its
source) are optional; any other column (a compound's name, a comment) is ignored and listed. Files are
read by `controller.results_csv` (UTF-8 with or without BOM, blank rows skipped, errors at file:line).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from closedloop.controller.protocol.model import ProtocolError, parse_protocol_text
from closedloop.controller.results_csv import STATUSES, ResultsFileError, csv_rows
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.lifecycle import MEASUREMENT_STATES
from closedloop.controller.store.reads import CampaignReads, TrialRecord
from closedloop.controller.warm_start.check import (
    ImportRow,
    ImportSource,
    Target,
    WarmStartError,
    measured_value,
    outside_space,
    parameter_value,
)
from closedloop.planners.space import FixedParameter
from closedloop.records import Value
from closedloop.units import UnitError, convert, parse_unit

_HEADER_UNIT_OPEN = {"[": "]", "(": ")"}


@dataclass(frozen=True)
class _Column:
    name: str  # the parameter, measured quantity, "status" or "trial" it gives
    unit: str  # from the header; "" when none is written
    number: int  # 1-based, for file:line:column


# ---- CSV ------------------------------------------------------------------------------------------


def read_csv(path: Path, target: Target) -> ImportSource:
    """Every row of a CSV file, checked: raises WarmStartError at the first problem (file:line:column)."""
    try:
        rows = csv_rows(path)
    except ResultsFileError as exc:
        raise WarmStartError(str(exc)) from None
    expected = ", ".join(p.name for p in target.parameters if not isinstance(p, FixedParameter))
    if not rows:
        raise WarmStartError(f"{path}: the file is empty; expected a header naming the parameters ({expected}) "
                             f"and objectives ({', '.join(target.objectives)}), then one row per earlier result")
    (header_line, header), body = rows[0], rows[1:]
    columns, ignored = _columns(path, header_line, header, target)
    if not body:
        raise WarmStartError(f"{path}: no rows under the header (line {header_line}); add one row per earlier result")
    out = []
    for line, cells in body:
        if len(cells) != len(header):
            raise WarmStartError(f"{path}:{line}: {len(cells)} cells in a row of {len(header)} columns; check for a "
                                 "missing or extra comma")
        out.append(_csv_row(path, line, [c.strip() for c in cells], columns, target))
    absent = [o for o in target.objectives if o not in columns]
    if absent and not all(r.failed for r in out):
        raise WarmStartError(f"{path}:{header_line}: no column {', '.join(absent)} (an objective of this campaign); "
                             "add it, with `failed` in a status column for a sample that gave no value")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImportSource("csv", path, digest, f"sha256:{digest}", out, ignored)


def _split_header(cell: str) -> tuple[str, str]:
    """`anneal_temp [K]` or `anneal_temp (K)` -> ("anneal_temp", "K"); a name without a unit -> (name, "")."""
    text = cell.strip()
    close = text[-1:] if text else ""
    opening = {v: k for k, v in _HEADER_UNIT_OPEN.items()}.get(close)
    if opening is None or opening not in text:
        return text, ""
    start = text.rindex(opening)
    return text[:start].strip(), text[start + 1 : -1].strip()


def _columns(path: Path, line: int, header: list[str], target: Target) -> tuple[dict[str, _Column], tuple[str, ...]]:
    known = {*(p.name for p in target.parameters), *target.measured_units, "status", "trial"}
    columns: dict[str, _Column] = {}
    ignored: list[str] = []
    for number, cell in enumerate(header, start=1):
        name, unit = cell.strip(), ""
        if name not in known:
            name, unit = _split_header(cell)
        if name not in known:
            ignored.append(cell.strip() or f"column {number} (no name)")
            continue
        if name in columns:
            raise WarmStartError(f"{path}:{line}:{number}: column {cell.strip()!r} gives {name}, like column "
                                 f"{columns[name].number}; keep one of them")
        if unit:
            _check_header_unit(path, line, number, name, unit, target)
        columns[name] = _Column(name, unit, number)
    missing = [p.name for p in target.parameters if not isinstance(p, FixedParameter) and p.name not in columns]
    if missing:
        raise WarmStartError(
            f"{path}:{line}: no column for parameter {', '.join(missing)}; every parameter of the space needs a "
            f"column (optionally with its unit: `{missing[0]} [unit]`), only fixed parameters may be left out"
        )
    return columns, tuple(ignored)


def _check_header_unit(path: Path, line: int, number: int, name: str, unit: str, target: Target) -> None:
    wanted = target.parameter_units.get(name, target.measured_units.get(name))
    where = f"{path}:{line}:{number}"
    if wanted is None:
        raise WarmStartError(f"{where}: the {name} column takes no unit; drop [{unit}] from its header")
    try:
        parse_unit(unit)
        convert(1.0, unit, wanted)
    except UnitError as exc:
        raise WarmStartError(f"{where}: {name} [{unit}]: {exc} (this campaign's unit of {name} is "
                             f"{wanted or 'none: a plain number'})") from None


def _csv_row(path: Path, line: int, cells: list[str], columns: dict[str, _Column], target: Target) -> ImportRow:
    def cell(name: str) -> str:
        return cells[columns[name].number - 1] if name in columns else ""

    def where(name: str) -> str:
        return f"{path}:{line}:{columns[name].number}"

    conditions: dict[str, Value] = {}
    for p in target.parameters:
        raw = cell(p.name)
        if not raw:
            if isinstance(p, FixedParameter):
                conditions[p.name] = p.value
                continue
            raise WarmStartError(f"{where(p.name)}: no value for parameter {p.name}; every row needs one")
        try:
            conditions[p.name] = parameter_value(p, raw, columns[p.name].unit, target.parameter_units[p.name])
        except ValueError as exc:
            raise WarmStartError(f"{where(p.name)}: {p.name}: {exc}") from None
    status = cell("status").lower()
    if status not in STATUSES:
        raise WarmStartError(f"{where('status')}: status {status!r}: leave it empty for a measured sample, or write "
                             "`failed` for a sample that gave no usable value")
    failed = STATUSES[status]
    given = [name for name in target.measured_units if cell(name)]
    if failed and given:
        raise WarmStartError(f"{where(given[0])}: a failed row (status `failed`) is recorded without values; empty "
                             f"the cells of {', '.join(given)} or clear its status")
    values = {}
    for name in given:
        try:
            values[name] = measured_value(target, name, cell(name), columns[name].unit)
        except ValueError as exc:
            raise WarmStartError(f"{where(name)}: {exc}") from None
    missing = [o for o in target.objectives if o not in values and o in columns]  # no column: see read_csv
    if not failed and missing:
        raise WarmStartError(f"{where(missing[0])}: no value of {', '.join(missing)} (an objective); give one, or write `failed` "
                             "in a status column for a sample that gave no usable value")
    trial = None
    if cell("trial"):
        try:
            trial = int(cell("trial"))
        except ValueError:
            raise WarmStartError(f"{where('trial')}: trial {cell('trial')!r}: not a trial number") from None
    return ImportRow(f"{path.name}:{line}", conditions, values, failed, outside_space(target, conditions),
                     line=line, source_trial=trial)


# ---- another campaign -------------------------------------------------------------------------------


def read_campaign(path: Path, target: Target, into: CampaignReads) -> ImportSource:
    """The results (measured and failed trials) of another campaign file, in this campaign's units. Its own
    warm-start trials are left out (listed in `skipped`): import their first source instead, so each
    earlier result enters once, with its real provenance."""
    if path.resolve() == Path(into.path).resolve():
        raise WarmStartError(f"{path}: that is this campaign's own file; import another campaign's file")
    with CampaignStore.open(path) as source:  # read-only: a source that is running meanwhile is fine
        info = source.campaign()
        trials = source.trials(states=MEASUREMENT_STATES)
    key = f"campaign:{info['name']}:{info['created_at']!r}:{info['protocol_sha256']}"
    mine = into.campaign()
    if key == f"campaign:{mine['name']}:{mine['created_at']!r}:{mine['protocol_sha256']}":
        raise WarmStartError(f"{path}: a copy of this very campaign; import another campaign's file")
    try:
        protocol = parse_protocol_text(info["protocol_text"], f"{path} (its stored protocol)")
    except ProtocolError as exc:
        raise WarmStartError(f"{path}: its stored protocol cannot be read by this closedloop ({exc})") from None
    units = {name: str(getattr(spec, "unit", "") or "") for name, spec in protocol.space.items()}
    kept = [t for t in trials if t.origin != "warm_start"]
    skipped = [f"trial {t.id} (itself imported)" for t in trials if t.origin == "warm_start"]
    for o in target.objectives:
        if any(t.state == "measured" for t in kept) and not any(o in t.values for t in kept):
            raise WarmStartError(f"{path}: none of its trials has a value of {o}, an objective of this campaign; "
                                 "import results of the same quantity")
    rows = [_campaign_row(path, t, units, target) for t in kept]
    if not rows:
        raise WarmStartError(f"{path}: no measured or failed trial to import" + (
            f" ({len(skipped)} left out: imported there)" if skipped else ""))
    ignored = tuple(sorted(set(protocol.space) - {p.name for p in target.parameters}))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ImportSource("campaign", path, digest, key, rows, ignored, tuple(skipped))


def _campaign_row(path: Path, t: TrialRecord, units: dict[str, str], target: Target) -> ImportRow:
    where = f"{path}: trial {t.id}"
    conditions: dict[str, Value] = {}
    for p in target.parameters:
        if p.name not in t.conditions:
            if isinstance(p, FixedParameter):
                conditions[p.name] = p.value
                continue
            raise WarmStartError(f"{where}: no value of {p.name}, a parameter of this campaign (that campaign's "
                                 f"parameters: {', '.join(t.conditions)})")
        try:
            conditions[p.name] = parameter_value(p, t.conditions[p.name], units.get(p.name, ""),
                                                 target.parameter_units[p.name])
        except ValueError as exc:
            raise WarmStartError(f"{where}: {p.name}: {exc}") from None
    values = {}
    for name, value in t.values.items():
        if name in target.measured_units:
            try:
                values[name] = measured_value(target, name, value, t.units.get(name, ""))
            except ValueError as exc:
                raise WarmStartError(f"{where}: {exc}") from None
    # As the planner reads a campaign (controller.engine.history): a trial measured without every
    # objective is a failed sample.
    failed = t.state == "failed" or any(o not in values for o in target.objectives)
    return ImportRow(f"{path.name} trial {t.id}", conditions, {} if failed else values, failed,
                     outside_space(target, conditions), source_trial=t.id)
