"""The dashboard's costs (issue 25), measured in real Chromium against a real `closedloop serve` process:

1. first paint of a 500-trial campaign: from navigation to the page's first drawn state (table, figure);
2. what open pages cost a running campaign: a `--sim` campaign's wall and CPU time with 0 and with 20
   pages open on it (each page holds a server-sent event stream and redraws on every change), and the
   dashboard server's own CPU time meanwhile.

A `--sim` campaign runs in virtual time: it is all CPU, so on this 2-core machine anything else running
slows it, and 20 Chromium pages redrawing plotly figures are a lot else. In a lab the pages are on other
computers (a desk, a phone) and only the server shares the campaign's machine. So part 2 is measured
three ways, runs with and without the load alternating, twice each, medians compared:
- `chromium`: 20 Chromium pages on this machine (the worst case: the browser's drawing competes too);
- `event_streams`: 20 clients in another process at nice 19 that hold the event stream and fetch the
  state on every event, as a page does, without drawing it (pages drawn elsewhere: the server's cost);
- `busy_loops`: no dashboard at all, 20 busy loops at nice 19: what any 20 background processes cost a
  campaign on this machine (the reference for reading the first).

    $ .venv/bin/python -m benchmarks.dashboard [--repeats N] [--loads chromium,event_streams,busy_loops]
                                                  # writes benchmarks/results/dashboard.json

Prints and writes JSON; not a timed test. The machine is shared: read the load printed beside the runs.
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
from statistics import median
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
def dashboard(folder: Path) -> Iterator[tuple[str, int]]:
    """`closedloop serve FOLDER`: its URL and pid."""
    process = closedloop("serve", str(folder), "--port", "0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield line.split(" at ", 1)[1].split()[0], process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


@contextmanager
def chromium_pages(p: Any, url: str, db: Path) -> Iterator[dict[str, Any]]:
    """20 Chromium pages open on the campaign, each with its event stream, before it starts."""
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
    pages = [browser.new_page() for _ in range(20)]
    for page in pages:
        page.goto(f"{url}campaign/{db.name}")
        page.wait_for_function("() => window.closedloopUpdates >= 1", timeout=60_000)
    seen: dict[str, Any] = {}
    yield seen
    time.sleep(2)  # the last change reaches the pages
    seen["redraws_per_page"] = sorted(page.evaluate("window.closedloopUpdates") for page in pages)
    seen["results_shown_at_the_end"] = sorted(int(page.evaluate("document.body.dataset.results")) for page in pages)
    browser.close()


@contextmanager
def event_streams(url: str, db: Path) -> Iterator[dict[str, Any]]:
    """20 page stand-ins in a nice-19 process: each holds the event stream and fetches the state per event."""
    process = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "benchmarks.dashboard", "streams", url, db.name,
                                "20"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    process.stdout.readline()  # "connected": every stream is open
    seen: dict[str, Any] = {}
    yield seen
    time.sleep(2)
    process.terminate()
    seen["states_fetched"] = int(process.communicate(timeout=10)[0].split()[-1])


@contextmanager
def busy_loops(url: str, db: Path) -> Iterator[dict[str, Any]]:
    """No pages: 20 busy loops at nice 19, the reference."""
    loops = [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"]) for _ in range(20)]
    time.sleep(1)
    yield {}
    for loop in loops:
        loop.kill()
        loop.wait()


def cost_of(load: Any, folder: Path, url: str, server_pid: int, tag: str, repeats: int) -> dict[str, Any]:
    """Alternating runs of a 150-trial campaign without and with `load` (a context manager); medians."""
    alone: list[tuple[float, float]] = []
    loaded: list[tuple[float, float]] = []
    server_cpu: list[float] = []
    seen: list[dict[str, Any]] = []
    for repeat in range(repeats):
        alone.append(run_to_the_end(created(folder, f"{tag}-alone{repeat}", 150)))
        db = created(folder, f"{tag}-loaded{repeat}", 150)
        with load(url, db) as notes:
            before = cpu_seconds(server_pid)
            loaded.append(run_to_the_end(db))
            server_cpu.append(cpu_seconds(server_pid) - before)
        seen.append(notes)
    wall_alone, wall_loaded = median([w for w, _ in alone]), median([w for w, _ in loaded])
    return {"alone_wall_s": [w for w, _ in alone], "alone_cpu_s": [c for _, c in alone],
            "loaded_wall_s": [w for w, _ in loaded], "loaded_cpu_s": [c for _, c in loaded],
            "server_cpu_s_during_the_run": server_cpu,
            "slowdown_wall_median": wall_loaded / wall_alone - 1.0,
            "slowdown_cpu_median": median([c for _, c in loaded]) / median([c for _, c in alone]) - 1.0,
            "seen": seen, "load_after": os.getloadavg()[0]}


def streams(url: str, key: str, count: int) -> None:
    """The `event_streams` load: `count` page stand-ins until terminated; prints how many states were fetched."""
    import http.client
    import signal
    import threading
    import urllib.request

    fetched = [0]
    lock = threading.Lock()
    opened = threading.Barrier(count + 1)

    def page() -> None:
        host, port = url.split("//", 1)[1].rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port))
        connection.request("GET", f"/api/campaign/{key}/events")
        response = connection.getresponse()
        opened.wait()
        while line := response.fp.readline():
            if line.startswith(b"data:"):
                marker = line[5:].strip().decode()
                urllib.request.urlopen(f"{url}api/campaign/{key}?v={marker}").read()
                with lock:
                    fetched[0] += 1

    for _ in range(count):
        threading.Thread(target=page, daemon=True).start()
    opened.wait()
    print("connected", flush=True)
    signal.sigwait({signal.SIGTERM})
    print("fetched", fetched[0], flush=True)


def main(repeats: int, loads: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        folder = Path(tmp)
        big = created(folder, "big", 500)
        run_to_the_end(big)
        with dashboard(folder / "campaigns") as (url, server_pid):
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            paints = first_paint(browser, f"{url}campaign/{big.name}")
            browser.close()
            available = {"chromium": lambda u, db: chromium_pages(p, u, db), "event_streams": event_streams,
                         "busy_loops": busy_loops}
            costs = {name: {"load_at_start": os.getloadavg()[0], "repeats": repeats,
                            **cost_of(available[name], folder, url, server_pid, name, repeats)} for name in loads}
    # A run of some loads keeps the others' last results (each says when and under what load it was measured).
    earlier = json.loads(RESULTS.read_text()).get("campaign_150_trials_resume", {}) if RESULTS.exists() else {}
    result = {
        "load_at_start": load,
        "first_paint_500_trials_s": {"runs": paints, "median": median(paints)},
        "campaign_150_trials_resume": {**earlier, **costs},
    }
    print(json.dumps(result, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["streams"]:
        import signal

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # taken by sigwait in `streams`
        streams(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        raise SystemExit(0)
    def option(name: str, default: str) -> str:
        return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default

    raise SystemExit(main(int(option("--repeats", "2")), option("--loads", "chromium,event_streams,busy_loops").split(",")))
