"""mypy over the packages as they install: `python tests/typecheck.py` (make test runs it).

pyproject.toml maps the top-level folders under `closedloop` (package-dir). mypy cannot follow that
mapping through an editable install, so this builds build/typecheck/closedloop, a tree of symbolic links
with the installed names, and checks `-p closedloop` there with the settings in [tool.mypy].
Exits with mypy's code: 0 when the packages type-check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def link_tree() -> Path:
    """build/typecheck/closedloop/... -> the folders pyproject.toml maps, file by file for the root."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "closedloop"
    top.mkdir(parents=True)
    for name, folder in package_dir.items():
        source = ROOT / folder
        if name == "closedloop":
            for path in source.glob("*.py"):
                (top / path.name).symlink_to(path)
        else:
            (top / name.removeprefix("closedloop.")).symlink_to(source, target_is_directory=True)
    return TREE


def main() -> int:
    tree = link_tree()
    env = {**os.environ, "MYPYPATH": str(tree)}
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "closedloop"]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
