"""Protocol files too big or too deep to be protocols are refused early, with the limit stated (issue 19).

A protocol is a few KB nested four or five levels; what is far beyond that is a mistake or an attack,
and used to cost a RecursionError traceback (deep nesting) or minutes and gigabytes (huge files).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from closedloop.controller.protocol.model import ProtocolError, load_protocol, parse_protocol_text
from closedloop.controller.protocol.sections import MAX_PARAMETERS
from closedloop.controller.protocol.yaml_source import MAX_BYTES, MAX_DEPTH
from tests.controller.protocol.edits import FURNACE, TRMC, Edited, edited, problems, refused_at, validate_cli


def nested_lists(tmp_path: Path, depth: int) -> Edited:
    return edited(tmp_path, FURNACE, ("\nplanner:", "\nextra: " + "[" * depth + "]" * depth + "\nplanner:"))


def run_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`closedloop validate` in its own process: recursion limits and stack depth are the real ones."""
    return subprocess.run([sys.executable, "-m", "closedloop", "validate", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=path.parent)


def test_a_list_nested_100k_deep_is_refused_in_a_real_process(tmp_path: Path) -> None:
    done = run_validate(nested_lists(tmp_path, 100_000).path)  # 200 KB of brackets: refused by its size
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert f"a protocol file may be at most {MAX_BYTES // 1024} KiB" in done.stderr


def test_nesting_that_overflows_the_yaml_reader_is_located_in_a_real_process(tmp_path: Path) -> None:
    bad = nested_lists(tmp_path, 30_000)  # 60 KB: inside the size limit, far past the reader's recursion
    done = run_validate(bad.path)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert done.stderr.startswith(f"{bad.path}:{bad.line_of('extra: [[[')}:"), done.stderr
    assert f"nested more than {MAX_DEPTH} levels deep" in done.stderr


def test_deep_nesting_is_refused_before_the_yaml_reader_composes_it(tmp_path: Path) -> None:
    # The composer took about 5 s on these 60 KB before its RecursionError; the scanner stops at level 17.
    bad = nested_lists(tmp_path, 30_000)
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_protocol(bad.path)
    assert time.perf_counter() - started < 2


def test_nesting_past_the_limit_is_located_at_the_first_level_too_deep(tmp_path: Path) -> None:
    # Deep enough to refuse, shallow enough that the YAML reader itself would cope: the check is ours.
    levels = MAX_DEPTH + 5
    nested = "".join(f"\n{' ' * (i + 1)}k{i}:" for i in range(levels)) + " 1"
    bad = edited(tmp_path, FURNACE, ("\nplanner:", f"\nextra:{nested}\nplanner:"))
    result = validate_cli(str(bad.path))
    # The root mapping is level 1 and the one under `extra` level 2, so k{MAX_DEPTH - 1}'s opens one too many.
    line = bad.line_of(f" k{MAX_DEPTH - 1}:")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{bad.path}:{line}:"), result.stderr
    assert f"nested more than {MAX_DEPTH} levels deep" in result.stderr


def test_the_examples_are_far_inside_the_limits() -> None:
    assert len(FURNACE.encode()) * 10 < MAX_BYTES and len(TRMC.encode()) * 10 < MAX_BYTES
    protocol = parse_protocol_text(FURNACE, "furnace.yaml")
    assert len(protocol.space) * 10 < MAX_PARAMETERS


def test_a_100_mb_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:  # sparse: 100 MB on paper, nothing on disk
        f.write(FURNACE.encode())
        f.truncate(100 * 1024 * 1024)
    started = time.perf_counter()
    result = validate_cli(str(path))
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}:1:1: ")
    assert "100.0 MiB" in result.stderr and f"at most {MAX_BYTES // 1024} KiB" in result.stderr


def test_an_endless_file_is_refused_without_reading_it_all() -> None:
    # /dev/zero has no size to look at; reading stops one byte past the limit.
    with pytest.raises(ProtocolError, match=f"at most {MAX_BYTES // 1024} KiB"):
        load_protocol("/dev/zero")


def test_ten_thousand_parameters_are_refused_early(tmp_path: Path) -> None:
    parameters = "".join(f"  p{i}: {{type: float, low: 0, high: 1}}\n" for i in range(10_000))
    bad = edited(tmp_path, FURNACE, ("space:\n", "space:\n" + parameters))
    started = time.perf_counter()
    result = validate_cli(str(bad.path))
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2 and f"at most {MAX_BYTES // 1024} KiB" in result.stderr


def test_more_parameters_than_a_gp_planner_can_use_are_refused_at_space(tmp_path: Path) -> None:
    n = MAX_PARAMETERS + 1
    parameters = "".join(f"  p{i}: {{type: float, low: 0, high: 1}}\n" for i in range(n))
    bad = edited(tmp_path, FURNACE, ("space:\n", "space:\n" + parameters))
    result = validate_cli(str(bad.path))
    refused_at(result, bad.path, bad.line_of("space:"), "space", f"{n + 3} parameters", f"at most {MAX_PARAMETERS}")


def test_an_integer_too_long_for_python_to_read_is_a_located_problem(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, ("trials: 30", "trials: 1" + "0" * 5000))
    result = validate_cli(str(bad.path))
    refused_at(result, bad.path, bad.line_of("trials: 1000"), "budget.trials", "5001 digits")
    assert len(result.stderr) < 1000  # the number is described, not repeated


def test_stored_text_past_the_size_limit_is_refused_too() -> None:
    # Campaign files and the Python API hand over text, not a path: the same limit holds.
    with pytest.raises(ProtocolError, match=f"at most {MAX_BYTES // 1024} KiB"):
        parse_protocol_text(FURNACE + "#" * MAX_BYTES, "stored.yaml")


def test_a_huge_value_in_a_list_is_not_echoed_in_full(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, ("method: sobol", "method: " + "x" * 20_000))
    result = validate_cli(str(bad.path))
    refused_at(result, bad.path, bad.line_of("method: xxx"), "planner.initial.method", "20002 characters")
    assert len(result.stderr) < 1000
    assert problems(bad.path)
