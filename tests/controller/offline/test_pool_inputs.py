"""`closedloop bench` without --inputs: every usable column but the objective, the rest named and left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from closedloop.controller.cli.bench import bench
from closedloop.controller.offline.pool_bench import load_pool


def wide_csv(path: Path, rows: int = 40, descriptors: int = 30) -> Path:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(rows, descriptors)).round(5), columns=[f"d{i}" for i in range(descriptors)])
    table.insert(0, "formula", [f"A{i}B{i % 3}" for i in range(rows)])  # an ID: unique text
    table["family"] = rng.choice(["oxide", "nitride"], rows)  # a category: kept
    table["const"] = 1.5
    table["gap"] = np.where(np.arange(rows) == 3, np.nan, 1.0 + np.arange(rows))
    table["y"] = table["d0"] - table["d1"] ** 2 + rng.normal(scale=0.1, size=rows)
    table.to_csv(path, index=False)
    return path


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(bench, args)
    return result.exit_code, result.output


def test_default_inputs_are_the_usable_columns_and_the_others_are_named(tmp_path: Path) -> None:
    pool = load_pool(wide_csv(tmp_path / "wide.csv"), None, "y", "max")
    assert list(pool.inputs) == [f"d{i}" for i in range(30)] + ["family"]
    assert pool.dropped == (
        "formula (text, a different value in every row)", "const (constant)", "gap (missing in 1 row(s))"
    )


def test_bench_runs_without_inputs_and_reports_the_columns(tmp_path: Path) -> None:
    csv = wide_csv(tmp_path / "wide.csv")
    report = tmp_path / "report.json"
    code, output = invoke([
        str(csv), "--objective", "y", "--direction", "max", "--planners", "botorch,random", "--seeds", "1",
        "--budget", "9", "--init", "4", "--workers", "1", "--quiet", "--json", str(report),
    ])
    assert code == 0, output
    assert "inputs (31): d0, d1, d2" in output
    assert "left out: formula (text, a different value in every row); const (constant)" in output
    data = json.loads(report.read_text())
    assert data["dataset"]["dropped_inputs"][0].startswith("formula")
    assert len(data["planners"]["botorch"]["runs"][0]["order"]) == 9


def test_a_named_identifier_column_is_refused_with_exit_2(tmp_path: Path) -> None:
    csv = wide_csv(tmp_path / "wide.csv")
    code, output = invoke([
        str(csv), "--inputs", "d0,formula", "--objective", "y", "--direction", "max", "--budget", "5", "--seeds", "1",
    ])
    assert code == 2
    assert "input 'formula' is text with a different value in every row" in output
    assert "Traceback" not in output
