"""The examples in docstrings run, and say what they print: they cannot drift from the code.

Each module's examples run in a scratch folder holding the example protocols and, as `opv.sqlite`, a
copy of a real interrupted TRMC campaign (tests/data/legacy), so examples can open, resume and audit
a campaign the way a user would. The README's command blocks are checked by tests/test_readme.py.
"""

from __future__ import annotations

import doctest
import importlib
import io
import shutil
from pathlib import Path

import pytest

from tests import paths

PACKAGES = {"closedloop": paths.ROOT / "closedloop", "closedloop.controller": paths.ROOT / "controller",
            "closedloop.drivers": paths.ROOT / "drivers", "closedloop.planners": paths.ROOT / "planners",
            "closedloop.simulators": paths.ROOT / "simulators"}
# Examples that run whole campaigns or sweeps take seconds each.
SLOW = {"closedloop.controller.campaign", "closedloop.controller.offline.audit",
        "closedloop.controller.offline.counterfactual", "closedloop.controller.offline.campaign_bench",
        "closedloop.controller.offline.pool_bench", "closedloop.controller.report.html",
        "closedloop.controller.dryrun.run"}


def modules_with_examples() -> list[str]:
    found = []
    for prefix, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if prefix == "closedloop" and parts and parts[0] in ("controller", "drivers", "planners", "simulators"):
                continue
            if ">>>" in path.read_text():
                found.append(".".join([prefix, *parts]))
    return found


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "protocols").symlink_to(paths.PROTOCOLS, target_is_directory=True)
    shutil.copy(paths.DATA / "legacy" / "trmc-killed-v0.1.0.sqlite", tmp_path / "opv.sqlite")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "module", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in modules_with_examples()]
)
def test_docstring_examples_run_as_written(module: str, scratch: Path) -> None:
    tests = doctest.DocTestFinder().find(importlib.import_module(module))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    assert runner.tries > 0, f"{module} has '>>>' in its source but no example doctest found"
    assert runner.failures == 0, report.getvalue()


def test_every_package_with_examples_is_found() -> None:
    """The runner must be able to fail: it finds the examples it is meant to run."""
    found = modules_with_examples()
    assert "closedloop" in found and "closedloop.controller.campaign" in found
    assert set(found) >= SLOW
