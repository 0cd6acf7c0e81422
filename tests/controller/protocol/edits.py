"""Bad protocols made from the shipped examples: one text edit each, written to a real file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from closedloop.controller.cli.main import main
from closedloop.controller.protocol.model import ProtocolError, ProtocolProblem, load_protocol
from closedloop.controller.protocol.validate import validate_protocol
from tests import paths

FURNACE = (paths.PROTOCOLS / "serial_furnace.yaml").read_text()
TRMC = (paths.PROTOCOLS / "trmc_opv_blend.yaml").read_text()
PARETO = (paths.PROTOCOLS / "trmc_opv_pareto.yaml").read_text()
POOL = (paths.PROTOCOLS / "pool_melting_points.yaml").read_text()


@dataclass(frozen=True)
class Edited:
    path: Path
    text: str

    def line_of(self, marker: str) -> int:
        """The 1-based number of the first line containing `marker`."""
        lines = [i for i, line in enumerate(self.text.splitlines(), start=1) if marker in line]
        assert lines, f"{marker!r} is not in the edited protocol"
        return lines[0]


def edited(folder: Path, base: str, *edits: tuple[str, str], name: str = "edited.yaml") -> Edited:
    """`base` with each (old, new) replaced once, written to `folder/name`."""
    text = base
    for old, new in edits:
        assert old in text, f"edit target {old!r} not in the base protocol"
        text = text.replace(old, new, 1)
    path = folder / name
    path.write_text(text)
    return Edited(path, text)


def validate_cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["validate", *args])


def problems(path: Path) -> list[ProtocolProblem]:
    """What `load_protocol` + `validate_protocol` find, as the library reports it."""
    try:
        protocol = load_protocol(path)
    except ProtocolError as e:
        return e.problems
    return validate_protocol(protocol).problems


def refused_at(result: Result, path: Path, line: int, field: str, *fragments: str) -> str:
    """The stderr line of a refused `validate` at `path:line` naming `field` and holding every fragment."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr and result.stdout == ""
    matching = [text for text in result.stderr.splitlines()
                if text.startswith(f"{path}:{line}:") and f" {field}: " in text and all(f in text for f in fragments)]
    assert matching, f"no line at {path}:{line} naming {field!r} with {fragments!r} in:\n{result.stderr}"
    return matching[0]
