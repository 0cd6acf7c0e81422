"""Operator control from the dashboard (issue 25), in real headless Chromium against a real `closedloop serve`
process and a campaign running in another process with `--approve-from dashboard`: approve, edit (an edit
outside the space is refused next to its field), skip, pause, resume and abort from the page; requests
without the token, or from another site, are refused (403) and change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.control import ControlChannel
from tests import paths
from tests.controller.cli.test_terminal_progress import short_furnace
from tests.controller.serve.test_dashboard import (  # noqa: F401 - browser: a fixture
    browser,
    dashboard_and_token,
    status_of,
)

WHO = "ann on the dashboard from 127.0.0.1"


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def attention(url: str) -> str:
    """The campaign list's needs-attention text for the campaign."""
    with urllib.request.urlopen(f"{url}api/campaigns", timeout=30) as response:
        return str(json.load(response)[0]["attention"])


def until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def last_approval_event(db: Path, trial_id: int) -> str:
    """The kind of the trial's last approval event; "" before there is one."""
    with CampaignStore.open(db) as store:
        events = store.events(trial_id=trial_id, kinds=["approval_wait", "approval"]) if store.trials() else []
    return events[-1]["kind"] if events else ""


def assert_refused_without_the_token(url: str, token: str, db: Path) -> None:
    """Each way a request can lack the operator's authority gets 403, and nothing is written."""
    control = f"{url}api/campaign/furnace.sqlite/control"
    page = {"Content-Type": "application/json", "X-Closedloop-Control": "1"}
    accept = {"action": "accept", "trial": 1}
    assert post(control, accept, page) == 403  # no token
    assert post(control, accept, {**page, "Authorization": "Bearer not-the-token"}) == 403
    with_token = {**page, "Authorization": f"Bearer {token}"}
    assert post(control, accept, {**with_token, "Origin": "http://evil.example"}) == 403  # another site
    assert post(control, accept, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}) == 403
    assert post(control, {"action": "abort"}, {**page, "Cookie": "closedloop_control=wrong"}) == 403
    assert post(f"{url}api/login", {"token": "guess"}, page) == 403
    assert ControlChannel(db).recent() == [], "a refused request reached the control file"
    assert last_approval_event(db, 1) == "approval_wait", "a refused request decided the proposal"


@pytest.mark.slow
def test_approve_edit_skip_pause_resume_and_abort_from_the_page(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    folder = tmp_path / "campaigns"
    folder.mkdir()
    db = folder / "furnace.sqlite"
    with dashboard_and_token(str(folder)) as (url, token):
        protocol = short_furnace(tmp_path, trials=4)  # within its six Sobol points: no model fit slows the test
        run = subprocess.Popen([sys.executable, "-m", "closedloop", "run", str(protocol), "--sim", "--db",
                                str(db), "--approve-from", "dashboard", "--quiet", "--no-report"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT)
        try:
            until(lambda: db.exists() and last_approval_event(db, 1) == "approval_wait", "trial 1 to wait")
            assert_refused_without_the_token(url, token, db)
            assert attention(url) == "1 proposal waits for approval at the dashboard"  # the list's badge

            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())  # the abort button asks first
            page.goto(f"{url}campaign/furnace.sqlite?token={token}")
            assert "token=" not in page.url, "the token stays out of the address bar and history"
            page.wait_for_selector('.approval[data-trial="1"] button[data-act="accept"]')
            loaded_at = page.evaluate("window.closedloopLoadedAt")
            page.fill("#operator", "ann")
            page.dispatch_event("#operator", "change")
            page.click('.approval[data-trial="1"] button[data-act="accept"]')

            form = '.approval[data-trial="2"]'
            page.wait_for_selector(f"{form} button[data-act='edit']")
            page.fill(f"{form} [data-field='anneal_temp']", "9999")
            page.click(f"{form} button[data-act='edit']")
            page.wait_for_function("s => document.querySelector(s).textContent.includes('9999')",
                                   arg=f"{form} [data-error='anneal_temp']")
            assert ControlChannel(db).recent()[0].action == "accept", "the refused edit was sent to the campaign"
            page.fill(f"{form} [data-field='anneal_temp']", "300")
            page.fill(f"{form} [data-field='anneal_time']", "20")
            page.click(f"{form} button[data-act='edit']")

            page.wait_for_selector('.approval[data-trial="3"] button[data-act="skip"]')
            page.click('.approval[data-trial="3"] button[data-act="skip"]')

            page.wait_for_selector('.approval[data-trial="4"] button[data-act="accept"]')
            page.click("#pause")  # taken once trial 4 is decided, and the page says so meanwhile
            page.wait_for_function("() => document.getElementById('held').textContent.includes('pause requested')")
            page.click('.approval[data-trial="4"] button[data-act="accept"]')
            page.wait_for_function("() => document.getElementById('held').textContent.includes('paused by ann')")
            time.sleep(1.5)  # paused: however long it waits, trial 4 (approved) does not start, nothing is proposed
            with CampaignStore.open(db) as store:
                assert len(store.trials()) == 4 and store.trial(4).state == "approved"
            assert page.locator(".approval").count() == 0
            assert attention(url) == f"paused by {WHO}: resume it from its page"

            page.click("#resume")
            page.wait_for_selector('.approval[data-trial="5"] button[data-act="accept"]')
            page.click("#abort")
            assert run.wait(timeout=60) == 130, run.communicate()
            page.wait_for_function("() => document.getElementById('status').textContent === 'paused'")
            assert page.evaluate("window.closedloopLoadedAt") == loaded_at  # all of it without a reload
        finally:
            if run.poll() is None:
                run.kill()
    with CampaignStore.open(db) as store:
        trials = store.trials()
        approvals = [e["detail"] for e in store.events(kinds=["approval"]) if e["trial_id"]]
        holds = [e["detail"] for e in store.events(kinds=["hold", "release"])]
        pauses = [e["detail"] for e in store.events(kinds=["pause"])]
    assert [t.state for t in trials] == ["measured", "measured", "rejected", "measured", "proposed"]
    assert trials[1].conditions["anneal_temp"] == 300.0 and trials[1].conditions["anneal_time"] == 20.0
    assert approvals == [f"accepted by operator ({WHO})", f"edited by operator ({WHO})",
                         f"skipped by operator ({WHO})", f"accepted by operator ({WHO})"]
    assert holds == [f"paused by {WHO}: no new trial starts until resumed", f"resumed by {WHO}"]
    assert pauses == [f"aborted by {WHO}"]


def test_the_token_url_sets_the_cookie_and_a_view_only_dashboard_refuses_control(tmp_path: Path) -> None:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    page = {"Content-Type": "application/json", "X-Closedloop-Control": "1"}
    with dashboard_and_token(str(folder)) as (url, token):
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(f"{url}?token={token}", timeout=30)
            raise AssertionError("the token URL must redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code == 303 and exc.headers["Location"] == "/"  # the token leaves the address bar
            cookie = exc.headers["Set-Cookie"]
        assert cookie.startswith(f"closedloop_control={token};") and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert status_of(f"{url}?token=wrong") == 403
        assert post(f"{url}api/login", {"token": token}, page) == 200
        assert post(f"{url}api/login", {"token": token}, {**page, "Content-Type": "text/plain; a=application/json"}) == 403
        evil_host = urllib.request.Request(url, headers={"Host": "evil.example"})  # DNS rebinding: refused
        assert status_of(evil_host) == 400
    with dashboard_and_token(str(folder), "--view-only") as (url, _):
        assert post(f"{url}api/login", {"token": ""}, page) == 403
        assert post(f"{url}api/campaign/x.sqlite/control", {"action": "pause"}, page) == 403


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
