"""What `pip install .` installs: the package `closedloop` and nothing else at the top level, with every
sub-package and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import paths


@pytest.mark.slow
def test_the_wheel_holds_closedloop_and_nothing_else_at_the_top(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(paths.ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("closedloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"closedloop", next(t for t in tops if t.endswith(".dist-info"))}
    for module in ("closedloop/__main__.py", "closedloop/controller/engine/engine.py", "closedloop/drivers/registry.py",
                   "closedloop/planners/botorch_planner.py", "closedloop/simulators/trmc/wire.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "closedloop = closedloop.controller.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
