"""`closedloop run` on a real terminal (a pty): each result stays on screen as a line, with its conditions
rounded and in their units, its values in theirs and the best so far, above a live bar that labels
elapsed time and ETA (issue 20). Piped, the same lines go to stderr and stdout holds only the result."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import paths

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def run_on_a_pty(args: list[str], timeout: float = 240.0) -> tuple[int, str]:
    """`closedloop ARGS` with a pty as its terminal (stdout and stderr); its exit code and what it drew."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "closedloop", *args], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "200"})
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the process closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def short_furnace(folder: Path, trials: int = 8) -> Path:
    """The furnace example on 8 trials: every line the terminal shows, at a quarter of the campaign's time."""
    text = (paths.PROTOCOLS / "serial_furnace.yaml").read_text()
    assert "budget: {trials: 30," in text
    path = folder / "furnace.yaml"
    path.write_text(text.replace("budget: {trials: 30,", f"budget: {{trials: {trials},"))
    return path


@pytest.mark.slow
def test_a_terminal_keeps_a_line_per_result_above_a_labelled_bar(tmp_path: Path) -> None:
    code, screen = run_on_a_pty(["run", str(short_furnace(tmp_path)), "--sim", "--no-report",
                                 "--db", str(tmp_path / "c.sqlite")])
    assert code == 0, screen[-2000:]
    results = [line for line in screen.splitlines() if re.search(r"\] trial \d+ ok: ", line)]
    assert len(results) >= 6, screen[-2000:]
    first = results[0]
    assert re.search(r"sheet_resistance=[0-9.e+-]+ ohm", first)  # the value in its unit
    assert re.search(r"at anneal_temp=[0-9.]+ degC  anneal_time=[0-9.]+ min  gas_flow=[0-9.]+ sccm", first)
    assert "(best sheet_resistance " in first and "ETA" in first
    assert "elapsed" in screen and re.search(r"ETA\s+(\d+:\d\d:\d\d|-:--:--)", screen)  # the bar's labels


def test_piped_the_results_are_lines_on_stderr_and_stdout_says_how_it_ended(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "closedloop", "run", str(short_furnace(tmp_path)),
                           "--sim", "--no-report", "--db", str(tmp_path / "c.sqlite")],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"\] trial 1 ok: sheet_resistance=\S+ ohm  at anneal_temp=", done.stderr)
    assert "] trial" not in done.stdout and done.stdout.startswith("stopped: ") and "campaign file:" in done.stdout
