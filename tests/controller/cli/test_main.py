"""The command group: every command loads lazily, and `--help` describes each one as its own help does."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

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


HEAVY = ("torch", "botorch", "plotly", "sklearn", "pandas", "closedloop.controller.engine.build")


def modules_loaded_by(args: list[str]) -> list[str]:
    """Which of HEAVY a fresh interpreter has imported after running `closedloop ARGS`."""
    probe = (
        "import sys\n"
        "from closedloop.controller.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:], prog_name='closedloop')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "heavy: [" in done.stderr, (args, done.stderr[-2000:])
    return ast.literal_eval(done.stderr.rsplit("heavy: ", 1)[1].strip())


def test_help_and_validate_import_no_planner_plotting_or_table_library() -> None:
    # pool-mode protocols read their candidate table with pandas; these two do not have one
    assert modules_loaded_by(["--help"]) == []
    assert modules_loaded_by(["validate", "protocols/trmc_opv_blend.yaml"]) == []


def test_status_reads_the_file_without_building_an_engine(tmp_path: Path) -> None:
    campaign = tmp_path / "legacy.sqlite"
    shutil.copy(paths.DATA / "legacy" / "trmc-killed-v0.1.0.sqlite", campaign)
    assert modules_loaded_by(["status", str(campaign)]) == []
