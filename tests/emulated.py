"""An emulator in its own process, as a user starts it: `closedloop emulate MODEL --pty ...`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def emulator_process(model: str, *args: str) -> Iterator[str]:
    """`closedloop emulate MODEL --pty ARGS` in its own process; yields the pty path it prints and, on
    leaving, checks that SIGTERM shut it down cleanly."""
    process = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", model, "--pty", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on /dev/"), first + process.stderr.read()
        yield first.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
