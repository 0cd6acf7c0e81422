"""`closedloop schema`: the JSON Schema editors check protocols with, and docs/protocol-reference.md,
both generated from the models `closedloop validate` uses (issue 24, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from closedloop.controller.protocol.reference import protocol_reference
from closedloop.controller.protocol.schema import protocol_json_schema
from tests import paths

EXAMPLES = sorted(paths.PROTOCOLS.glob("*.yaml"))


def validator() -> jsonschema.Draft202012Validator:
    schema = protocol_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("protocol", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_protocol_fits_the_schema(protocol: Path) -> None:
    data = YAML(typ="safe").load(protocol.read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator().iter_errors(data)]
    assert errors == []


@pytest.mark.parametrize("path, key, value", [
    ((), "budjet", {"trials": 3}),  # a misspelled section
    (("instrument",), "envelop", {}),  # a misspelled key of the serial instrument section
    (("instrument", "serial"), "baud", 9600),
    (("budget",), "trials", "many"),
])
def test_the_schema_catches_what_an_editor_should_underline(path: tuple[str, ...], key: str, value: object) -> None:
    data = YAML(typ="safe").load((paths.PROTOCOLS / "serial_furnace.yaml").read_text())
    node = data
    for part in path:
        node = node[part]
    node[key] = value
    assert list(validator().iter_errors(data)), f"{'/'.join((*path, key))} = {value!r} was accepted"


def test_the_reference_page_is_up_to_date() -> None:
    committed = (paths.ROOT / "docs" / "protocol-reference.md").read_text()
    assert protocol_reference() == committed, "regenerate: closedloop schema --reference > docs/protocol-reference.md"


def test_the_reference_names_every_section_and_driver() -> None:
    page = protocol_reference()
    for heading in ("### SerialInstrumentConfig", "### DescribedSimulation", "### EnvelopeLimit", "### BudgetSection",
                    "### driver: trmc", "### driver: mbe", "### driver: sim:lookup", "## Units"):
        assert heading in page
    assert "| `max_step` |" in page and "| `process_time_from` |" in page


def test_the_cli_prints_the_schema_as_json() -> None:
    done = subprocess.run([sys.executable, "-m", "closedloop", "schema"], capture_output=True, text=True, timeout=120,
                          cwd=paths.ROOT)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema["$schema"].endswith("2020-12/schema") and "instrument" in schema["properties"]
