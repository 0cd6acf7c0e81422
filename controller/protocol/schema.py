"""The protocol's JSON Schema, for editors: `closedloop schema > protocol.schema.json`, then a YAML
language server completes and checks protocol files as they are written
(`# yaml-language-server: $schema=protocol.schema.json` on a protocol's first line).

It is generated from the same pydantic models `closedloop validate` checks with, so the two never
disagree about which keys exist. Where a field takes a shorthand that a validator expands (a duration
"2 h" for seconds, a quantity "450 degC", one command for a list, `approval: none`), the schema accepts
the written form too; the value itself is then checked by `closedloop validate`, which knows units.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from closedloop.controller.protocol.model import Protocol

SCHEMA_ID = "https://closedloop.dev/schemas/protocol.schema.json"


class _WrittenForms(GenerateJsonSchema):
    """Accept, beside each expanded form, the text or number a before-validator expands."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        expanded = super().function_before_schema(schema)
        if schema.get("json_schema_input_schema") is not None:
            return expanded  # the field declares what may be written
        return {"anyOf": [expanded, {"type": ["string", "number"]}]}


def protocol_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a protocol file."""
    schema = _tidied(Protocol.model_json_schema(schema_generator=_WrittenForms))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "closedloop protocol", **schema}


def _tidied(node: Any) -> Any:
    """Two repairs of pydantic's output, everywhere in the tree:

    - a model with a before-validator of its own gets its `additionalProperties` beside the `anyOf` of
      its forms, where it would refuse every key of the object form: it moves into that form;
    - the members of a union picked by a discriminator function (`instrument`: serial, manual or a
      declared driver) are `oneOf`, which fails where a short section fits two of them; the validator
      picks by `driver`, so `anyOf` says the same thing without that failure.
    """
    if isinstance(node, list):
        return [_tidied(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {("anyOf" if key == "oneOf" else key): _tidied(value) for key, value in node.items()}
    forms = node.get("anyOf")
    if "additionalProperties" in node and isinstance(forms, list) and forms and "properties" in forms[0]:
        forms[0].setdefault("additionalProperties", node.pop("additionalProperties"))
    return node
