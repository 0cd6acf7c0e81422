"""`closedloop serve`: the live dashboard, in real headless Chromium against a real server process and a
campaign running in another process (issue 25, first step: viewing)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import paths
from tests.controller.report.test_report import BROWSER_ARGS, CHROMIUM

TRIALS = 8


def small_trmc(folder: Path) -> Path:
    text = (paths.PROTOCOLS / "trmc_opv_blend.yaml").read_text()
    assert "budget: {trials: 40" in text
    path = folder / "trmc.yaml"
    path.write_text(text.replace("budget: {trials: 40", f"budget: {{trials: {TRIALS}"))
    return path


@contextmanager
def dashboard(*args: str) -> Iterator[str]:
    """`closedloop serve ARGS --port 0` in its own process; yields its URL."""
    with dashboard_and_token(*args) as (url, _):
        yield url


@contextmanager
def dashboard_and_token(*args: str) -> Iterator[tuple[str, str]]:
    """`closedloop serve ARGS --port 0` in its own process; yields its URL and the control token it printed."""
    process = subprocess.Popen([sys.executable, "-m", "closedloop", "serve", *args, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT)
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
        assert " at http://127.0.0.1:" in first, first + process.stderr.read()
        url = first.split(" at ", 1)[1].split()[0]
        if "--view-only" in args:
            assert second.startswith("control: off"), second
            yield url, ""
            return
        assert second.startswith(f"control: open {url}?token="), second
        yield url, second.split("?token=", 1)[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


def status_of(url: str | urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_a_running_campaign_updates_on_the_page_without_reload(tmp_path: Path, browser: Any) -> None:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    protocol = small_trmc(tmp_path)
    db = folder / "trmc.sqlite"
    with dashboard(str(folder)) as url:
        run = subprocess.Popen([sys.executable, "-m", "closedloop", "run", str(protocol), "--sim", "--db", str(db),
                                "--quiet", "--no-report"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=paths.ROOT)
        try:
            deadline = time.monotonic() + 120
            while status_of(f"{url}api/campaign/trmc.sqlite") != 200:
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "the campaign file never appeared"
                time.sleep(0.2)
            page = browser.new_page()
            page.goto(f"{url}campaign/trmc.sqlite")
            page.wait_for_function("() => window.closedloopUpdates >= 1", timeout=60_000)
            loaded_at = page.evaluate("window.closedloopLoadedAt")
            first = int(page.evaluate("document.body.dataset.results"))
            assert first < TRIALS, "the campaign finished before the page opened: nothing to watch"
            page.wait_for_function(f"() => Number(document.body.dataset.results) >= {TRIALS}", timeout=180_000)
            assert run.wait(timeout=120) == 0, run.communicate()
            page.wait_for_function("() => document.getElementById('stop').textContent.includes('budget')", timeout=30_000)
        finally:
            if run.poll() is None:
                run.kill()
        assert page.evaluate("window.closedloopLoadedAt") == loaded_at  # updated in place, never reloaded
        assert page.locator("#trials tbody tr").count() == TRIALS
        assert page.locator("#progress-plot .main-svg").count() >= 1  # plotly served by the dashboard itself
        listing = browser.new_page()
        listing.goto(url)
        assert "opv-blend-trmc" in listing.locator("#campaigns").inner_text()
        # The report's figures on the live page: objectives vs parameters and the latest TRMC transients...
        assert page.locator("#figures-objectives-vs-parameters .main-svg").count() >= 1
        assert "(latest)" in page.locator("#figures-trmc-transients").inner_text()
        # ...and the model's view, fitted only when it is opened.
        page.click("#model summary")
        page.wait_for_selector("#model-figures-model-slices .main-svg", timeout=60_000)
        assert page.locator("#model-figures-model-loo .main-svg").count() >= 1


def test_a_path_outside_the_served_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    outside = tmp_path / "secret.sqlite"
    outside.write_bytes(b"not served")
    with dashboard(str(folder)) as url:
        for key in ("../secret.sqlite", "..%2Fsecret.sqlite", str(outside), "%2Fetc%2Fpasswd"):
            assert status_of(f"{url}api/campaign/{key}") == 404, key
            assert status_of(f"{url}campaign/{key}") == 404, key
        (folder / "damaged.sqlite").write_bytes(b"not a campaign" * 100)  # served, but unreadable: said so
        assert status_of(f"{url}api/campaign/damaged.sqlite") == 422
        assert status_of(f"{url}api/campaign/damaged.sqlite/model") == 422
        assert status_of(f"{url}api/campaigns") == 200
