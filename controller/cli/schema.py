"""`closedloop schema`: the protocol's JSON Schema for editors, or the reference page (markdown).

    $ closedloop schema > protocol.schema.json
    $ closedloop schema --reference > docs/protocol-reference.md
"""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--reference", is_flag=True, help="Print the protocol reference page (markdown) instead.")
def schema(reference: bool) -> None:
    """Print the JSON Schema of protocol files (for editors), or with --reference the protocol reference page."""
    if reference:
        from closedloop.controller.protocol.reference import protocol_reference

        click.echo(protocol_reference(), nl=False)
        return
    from closedloop.controller.protocol.schema import protocol_json_schema

    click.echo(json.dumps(protocol_json_schema(), indent=2))
