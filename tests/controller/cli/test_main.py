"""The command group: every command loads lazily, and `--help` describes each one as its own help does."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
from click.testing import CliRunner

from closedloop.controller.cli.main import COMMANDS, main
from tests import paths

ROOT = paths.ROOT


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n")[0].split())
    head, dot, _ = paragraph.partition(". ")
    return head + "." if dot else paragraph


def test_the_help_line_of_each_command_is_the_first_sentence_of_its_own_help() -> None:
    for name, (module, attribute, line) in COMMANDS.items():
        command = getattr(importlib.import_module(f"closedloop.controller.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        assert first_sentence(command.help or "") == line, name


def test_help_lists_every_command_and_unknown_ones_are_usage_errors() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(f"  {name} " in result.output for name in COMMANDS)
    wrong = CliRunner().invoke(main, ["stauts"])
    assert wrong.exit_code == 2 and "No such command 'stauts'" in wrong.output


def test_help_and_validate_import_neither_torch_nor_plotly() -> None:
    probe = (
        "import sys\n"
        "from closedloop.controller.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], prog_name='closedloop')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'botorch', 'plotly', 'sklearn') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    for args in (["--help"], ["validate", "protocols/trmc_opv_blend.yaml"]):
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
        assert "heavy: []" in done.stderr, (args, done.stderr[-2000:])
