"""docs/protocol-reference.md, generated from the models `closedloop validate` checks with (through the
JSON Schema of `controller.protocol.schema`), so the page lists exactly the keys that exist.

    $ closedloop schema --reference > docs/protocol-reference.md

tests/test_docs.py regenerates the page and compares it with the committed one.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import BaseModel

from closedloop.controller.protocol.catalog import instrument, instrument_names
from closedloop.controller.protocol.schema import protocol_json_schema
from closedloop.drivers.base import DriverEntry

INTRO = """\
# Protocol file reference

Generated from the models `closedloop validate` checks with (`closedloop schema --reference`); do not
edit by hand. A protocol is one YAML file; `closedloop validate FILE` names the file, line and key of
every mistake, and `closedloop schema > protocol.schema.json` exports the same rules as a JSON Schema
for editors (put `# yaml-language-server: $schema=protocol.schema.json` on a protocol's first line and
the YAML language server completes and checks keys as you type).

## Units

Every field that carries a unit takes a plain number in the unit the field (or its `unit` key) declares,
or a quantity with its own unit, converted by pint: `"450 degC"`, `"723 K"`, `"2 h"`, `"500 nm"`. Durations
(`timeout`, `wall_time`, `poll`, `cost`) are quantities of time; in instrument options a bare number is
seconds, elsewhere a duration needs its unit. Offset units (degC, K, degF) convert absolutely; a
`max_step` is a difference and converts without the offset. Besides pint's own units, the project defines
(closedloop/units.txt): `sccm` (and `slm`), `Torr`, `photons`, `ohm/sq` (sheet resistance), `at%` and `wt%`
(atomic and weight percent: not interchangeable with each other or with `percent`); pint knows `rpm`,
`mbar`, `Pa`, `percent`, `eV`, `angstrom`. An unknown unit is refused with the closest known one.

## Example

```yaml
name: furnace-anneal-sheet-resistance
version: 1
space:
  anneal_temp: {type: float, low: 150, high: 400, unit: degC}
  anneal_time: {type: float, low: 5, high: 120, unit: min}
constraints:
  - "anneal_temp + 1.5 * anneal_time <= 550"
objectives:
  sheet_resistance: {direction: minimize, unit: ohm/sq, log: true}
instrument:
  driver: serial
  connection: /dev/ttyUSB0          # or socket://HOST:PORT, visa://GPIB0::12::INSTR, sim://furnace
  set: {anneal_temp: "SOUR:TEMP {value:.1f}", anneal_time: {command: "SOUR:DWEL {value:.0f}", unit: s}}
  start: INIT
  wait: {query: "STAT:OPER?", until: "^IDLE", poll: 30 s, timeout: 4 h}
  measure: {sheet_resistance: {query: "FETC:RES?", unit: ohm/sq}}
  envelope:
    anneal_temp: {min: 20, max: 450, unit: degC, max_step: 300}
    anneal_time: {min: 0, max: 240, unit: min}
planner: {initial: {method: sobol, n: 6}, seed: 3}
budget: {trials: 30, wall_time: 3 day}
approval: none
```

The example protocols in `protocols/` show every section in use, each with comments.
"""


def protocol_reference() -> str:
    """The whole reference page (markdown)."""
    schema = protocol_json_schema()
    definitions: dict[str, Any] = schema["$defs"]
    lines = [INTRO, "## Top-level keys", "", *_table(schema, definitions), ""]
    for name in sorted(definitions):
        lines += [f"### {name}", "", *_description(definitions[name]), *_table(definitions[name], definitions), ""]
    lines += ["## Driver options (`instrument.options`)", "",
              "What each driver takes under `instrument.options` (a serial or manual instrument is described by "
              "the whole section, above).", ""]
    for driver in instrument_names():
        lines += _driver_options(driver)
    return "\n".join(lines).rstrip() + "\n"


def _description(definition: dict[str, Any]) -> list[str]:
    text = definition.get("description", "")
    return [inspect.cleandoc(text), ""] if text else []


def _table(definition: dict[str, Any], definitions: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = definition.get("properties") or _object_form(definition).get("properties") or {}
    if not properties:
        return []
    required = set(definition.get("required") or _object_form(definition).get("required") or ())
    rows = ["| key | accepts | default |", "|---|---|---|"]
    for key, spec in properties.items():
        default = "required" if key in required else _default(spec)
        rows.append(f"| `{key}` | {_accepts(spec, definitions)} | {default} |")
    return rows


def _object_form(definition: dict[str, Any]) -> dict[str, Any]:
    return next((form for form in definition.get("anyOf", ()) if "properties" in form), {})


def _default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return ""
    text = json.dumps(spec["default"], ensure_ascii=False)
    return f"`{text}`" if len(text) <= 40 else "(see the example protocols)"


def _accepts(spec: dict[str, Any], definitions: dict[str, Any]) -> str:
    """A short, readable type: `number or text (a quantity)`, a link to a section, a list of values."""
    parts = _kinds(spec)
    text = " or ".join(dict.fromkeys(parts))
    description = spec.get("description")
    return f"{text}; {description}".replace("|", "\\|").replace("\n", " ") if description else text.replace("|", "\\|")


def _kinds(spec: dict[str, Any]) -> list[str]:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return [f"[{name}](#{name.lower()})"]
    if "const" in spec:
        return [f"`{spec['const']}`"]
    if "enum" in spec:
        return [" / ".join(f"`{v}`" for v in spec["enum"])]
    if "anyOf" in spec:
        kinds = [kind for form in spec["anyOf"] for kind in _kinds(form)]
        if "number" in kinds and "text" in kinds and len(kinds) <= 4:
            kinds = [k for k in kinds if k not in ("number", "text")] + ["number or a quantity / shorthand text"]
        return kinds
    kind = spec.get("type")
    if isinstance(kind, list):
        return [_plain(k) for k in kind]
    if kind == "array":
        return [f"list of {' or '.join(_kinds(spec.get('items', {}))) or 'values'}"]
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        return [f"map of name to {' or '.join(_kinds(spec['additionalProperties'])) or 'values'}"]
    return [_plain(kind)] if kind else ["any"]


def _plain(kind: str) -> str:
    return {"string": "text", "integer": "whole number", "boolean": "true / false", "null": "nothing",
            "object": "mapping"}.get(kind, kind)


def _driver_options(driver: str) -> list[str]:
    entry = instrument(driver)
    config = entry.config if isinstance(entry, DriverEntry) else entry.options
    if isinstance(entry, DriverEntry) and entry.section:
        return [f"### driver: {driver}", "", f"{entry.summary}. Described by the whole instrument section: see "
                f"[{config.__name__}](#{config.__name__.lower()}).", ""]
    summary = entry.summary
    schema = config.model_json_schema(mode="validation")
    lines = [f"### driver: {driver}", "", summary[:1].upper() + summary[1:] + ".", ""]
    lines += _description(schema) if config.__doc__ and config.__doc__ != BaseModel.__doc__ else []
    table = _table(schema, schema.get("$defs", {}))
    return [*lines, *(table or ["No options."]), ""]

