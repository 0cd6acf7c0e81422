"""The dashboard's costs (issue 25), measured in real Chromium against a real `closedloop serve` process:

1. first paint of a 500-trial campaign: from navigation to the page's first drawn state (table, figure);
2. what open pages cost a running campaign: a `--sim` campaign's wall and CPU time with 0 and with 20
   pages open on it (each page holds a server-sent event stream and redraws on every change).

    $ .venv/bin/python -m benchmarks.dashboard            # writes benchmarks/results/dashboard.json

Prints and writes JSON; not a timed test. The machine is shared: compare the two runs of part 2, made
back to back, and read the load printed beside them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dashboard.json"
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

BRANIN = """\
name: branin-dashboard
description: Branin as a simulated instrument, random proposals (the campaign's cost is the engine's)
space:
  x1: {type: float, low: -5, high: 10}
  x2: {type: float, low: 0, high: 15}
objectives:
  y: {direction: minimize}
instrument:
  driver: sim:branin
planner: {acquisition: random, initial: {method: sobol, n: 4}, seed: 1}
budget: {trials: TRIALS}
approval: none
"""


def closedloop(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "closedloop", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def created(folder: Path, name: str, trials: int) -> Path:
    """A new campaign file of `trials` random Branin trials, nothing run yet (`closedloop init`)."""
    protocol = folder / f"{name}.yaml"
    protocol.write_text(BRANIN.replace("TRIALS", str(trials)))
    db = folder / "campaigns" / f"{name}.sqlite"
    done = subprocess.run([sys.executable, "-m", "closedloop", "init", str(protocol), "--db", str(db)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return db


def run_to_the_end(db: Path) -> tuple[float, float]:
    """`closedloop resume DB --sim` to its budget; (wall s, CPU s of that process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "closedloop", "resume", str(db), "--sim", "--quiet", "--no-report"],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


@contextmanager
def dashboard(folder: Path) -> Iterator[str]:
    process = closedloop("serve", str(folder), "--port", "0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=10)


def first_paint(browser: Any, url: str, repeats: int = 5) -> list[float]:
    times = []
    for _ in range(repeats):
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function("() => window.closedloopUpdates >= 1 && document.querySelector('#progress-plot .main-svg')",
                               timeout=60_000)
        times.append(time.perf_counter() - started)
        page.close()
    return times


def main() -> int:
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        folder = Path(tmp)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        big = created(folder, "big", 500)
        run_to_the_end(big)
        quiet, watched = created(folder, "quiet", 150), created(folder, "watched", 150)
        with dashboard(folder / "campaigns") as url:
            paints = first_paint(browser, f"{url}campaign/{big.name}")
            alone = run_to_the_end(quiet)
            pages = [browser.new_page() for _ in range(20)]
            for page in pages:  # all open, each with its event stream, before the campaign starts
                page.goto(f"{url}campaign/{watched.name}")
                page.wait_for_function("() => window.closedloopUpdates >= 1", timeout=60_000)
            seen = run_to_the_end(watched)
            time.sleep(2)  # the last change reaches the pages
            updates = [page.evaluate("window.closedloopUpdates") for page in pages]
            results = [int(page.evaluate("document.body.dataset.results")) for page in pages]
        browser.close()
    result = {
        "load_at_start": load,
        "first_paint_500_trials_s": {"runs": paints, "median": sorted(paints)[len(paints) // 2]},
        "campaign_150_trials_resume": {"no_pages_wall_s": alone[0], "no_pages_cpu_s": alone[1],
                                       "twenty_pages_wall_s": seen[0], "twenty_pages_cpu_s": seen[1],
                                       "slowdown_wall": seen[0] / alone[0] - 1.0,
                                       "redraws_per_page": {"min": min(updates), "max": max(updates)},
                                       "results_shown_at_the_end": {"min": min(results), "max": max(results)}},
    }
    print(json.dumps(result, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
