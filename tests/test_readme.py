"""The README's command blocks marked `<!-- checked -->` run as written and print what they show.

Each block runs in its own scratch folder (so blocks can run on different pytest-xdist workers), its
`$ command`s in order, in bash, in a folder that holds the example protocols and test data, with
`.venv/bin/closedloop` meaning this interpreter's `python -m closedloop`; its output (stdout and stderr
together) must match the lines under it, where `...` stands for any text, as in a doctest. An exit code
other than 0 is shown as a comment on the command line (`# exit 2`) and checked too.
"""

from __future__ import annotations

import doctest
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import paths

README = paths.ROOT / "README.md"
MARK = "<!-- checked -->"


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    expected: str
    exit_code: int


def checked_commands(text: str) -> list[Command]:
    lines = text.splitlines()
    commands: list[Command] = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        assert lines[i + 1].startswith("```"), f"README.md:{i + 1}: {MARK} must come right before a code block"
        j = i + 2
        current: tuple[int, str, int] | None = None
        output: list[str] = []
        while not lines[j].startswith("```"):
            if lines[j].startswith("$ "):
                if current is not None:
                    commands.append(Command(current[0], current[1], "\n".join(output), current[2]))
                command = lines[j][2:]
                code = re.search(r"#\s*exit (\d+)\s*$", command)
                current, output = (j + 1, command, int(code.group(1)) if code else 0), []
            else:
                output.append(lines[j])
            j += 1
        if current is not None:
            commands.append(Command(current[0], current[1], "\n".join(output), current[2]))
    return commands


def matches(expected: str, got: str) -> bool:
    return doctest.OutputChecker().check_output(expected + "\n", got, doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)


def scratch_folder(folder: Path) -> Path:
    (folder / "protocols").symlink_to(paths.PROTOCOLS, target_is_directory=True)
    (folder / "tests").mkdir()
    (folder / "tests" / "data").symlink_to(paths.DATA, target_is_directory=True)
    return folder


def blocks(commands: list[Command]) -> list[list[Command]]:
    """The commands grouped by the code block they are in (a block's commands build on each other)."""
    lines = README.read_text().splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line.strip() == MARK]
    grouped: list[list[Command]] = [[] for _ in starts]
    for command in commands:
        grouped[max(k for k, start in enumerate(starts) if start < command.line)].append(command)
    return [group for group in grouped if group]


COMMANDS = checked_commands(README.read_text())
BLOCKS = blocks(COMMANDS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b[0].line}" for b in BLOCKS])
def test_a_checked_readme_block_prints_what_the_readme_shows(block: list[Command], tmp_path: Path) -> None:
    scratch = scratch_folder(tmp_path)
    python = shlex.quote(sys.executable)
    for command in block:
        script = command.text.replace(".venv/bin/closedloop", f"{python} -m closedloop")
        done = subprocess.run(["bash", "-c", script], cwd=scratch, capture_output=True, text=True, timeout=600)
        got = done.stdout + done.stderr
        assert done.returncode == command.exit_code, f"README.md:{command.line}: {command.text}\n{got}"
        assert matches(command.expected, got), (
            f"README.md:{command.line}: {command.text}\n--- shown:\n{command.expected}\n--- printed:\n{got}")


def test_the_checker_finds_blocks_and_can_fail() -> None:
    assert len(COMMANDS) >= 3
    sample = f"{MARK}\n```console\n$ echo hi   # exit 0\nhi\n$ false  # exit 1\n```\n"
    (first, second) = checked_commands(sample)
    assert (first.text, first.expected, second.exit_code) == ("echo hi   # exit 0", "hi", 1)
    assert matches("a ... c", "a b c") and not matches("a b", "a c")
