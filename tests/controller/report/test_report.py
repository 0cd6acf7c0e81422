"""Campaign reports: real simulated campaigns (TRMC single and multi-objective, MBE with failures, zero
and one trial), the HTML checked in a real headless Chromium with the network blocked, plus the
numbers behind the plots (random baseline, leave-one-out) against brute force."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from closedloop.controller.cli.progress import ProgressReporter
from closedloop.controller.engine.events import Abandonment, TrialAbandoned, TrialMeasured, TrialStarted
from closedloop.controller.engine.operator import Decision
from closedloop.controller.report.data import hypervolume_trace, load_report_data, random_expected_best
from closedloop.controller.report.figures import Plot, progress_plot
from closedloop.controller.report.html import build_report, default_report_path, write_report
from closedloop.controller.report.model_view import _leave_one_out, model_view
from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.drivers.base import Measurement
from closedloop.planners.encoding import SpaceEncoding
from closedloop.planners.models import fit_models
from closedloop.planners.outcomes import build_training_data
from closedloop.planners.space import FloatParameter, Objective, Observation, Problem, SearchSpace
from tests import paths

ROOT = paths.ROOT
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]
HOSTILE = "<script>alert('x')</script> & \"quotes\""


# ---- campaigns ------------------------------------------------------------------------------------------


def _edited(source: str, replacements: list[tuple[str, str]]) -> str:
    text = (ROOT / "protocols" / source).read_text()
    for old, new in replacements:
        assert old in text, f"{source} no longer contains {old!r}; update this test's edit"
        text = text.replace(old, new)
    return text


class AcceptingOperator:
    """Approves every proposal, with a note full of markup the report must escape."""

    where = "test script"

    def decide(self, trial_id: int, conditions: dict, error: str | None = None) -> Decision:
        return Decision("accept", note=HOSTILE)


def _campaign(tmp: Path, name: str, text: str, *, operator: Any = None, run: bool = True) -> Path:
    protocol = tmp / f"{name}.yaml"
    protocol.write_text(text)
    db = tmp / f"{name}.sqlite"
    with Campaign.create(protocol, db, sim=True) as c:
        if run:
            c.run(sim=True, approver=operator)
    return db


TRMC_SMALL = [("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 7}"),
              ("initial: {method: sobol, n: 8}", "initial: {method: sobol, n: 4}")]


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("campaigns")
    single = TRMC_SMALL + [("description: P3HT:PCBM", f"description: {json.dumps(HOSTILE)} # P3HT:PCBM")]
    mbe = [("budget: {trials: 35, wall_time: 45 day}", "budget: {trials: 6}"),
           ("initial: {method: sobol, n: 6}", "initial: {method: sobol, n: 4}"),
           # A controller reset in the second growth: an instrument fault, then a retry.
           ("connection: sim://mbe ", "connection: sim://mbe\n  options: {faults: 'reset:once@2000'} ")]
    one = TRMC_SMALL[1:] + [("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 1}")]
    return {
        "single": _campaign(tmp, "single", _edited("trmc_opv_blend.yaml", single)),
        "multi": _campaign(tmp, "multi", _edited("trmc_opv_pareto.yaml", TRMC_SMALL)),
        "mbe": _campaign(tmp, "mbe", _edited("mbe_srruo3.yaml", mbe), operator=AcceptingOperator()),
        "zero": _campaign(tmp, "zero", _edited("trmc_opv_blend.yaml", TRMC_SMALL), run=False),
        "one": _campaign(tmp, "one", _edited("trmc_opv_blend.yaml", one)),
    }


# ---- the browser ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the report tests need Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield b
        b.close()


RENDERED = """() => Array.from(document.querySelectorAll('.report-plot')).map(box => {
    const plot = box.querySelector('.js-plotly-plot');
    const drawn = plot ? Array.from(plot.querySelectorAll('svg.main-svg, canvas')) : [];
    const area = Math.max(0, ...drawn.map(e => { const r = e.getBoundingClientRect(); return r.width * r.height; }));
    const marks = plot ? plot.querySelectorAll('.scatterlayer .trace, .barlayer .trace, .parcoords').length : 0;
    return {id: box.dataset.plot, area: area, marks: marks};
})"""


def open_in_browser(browser: Any, report: Path, screenshot: str) -> dict[str, Any]:
    """Load the report with every non-file request blocked; return errors, blocked requests, plots."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(report.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.report-plot .js-plotly-plot').length === "
                           "document.querySelectorAll('.report-plot').length")
    plots = page.evaluate(RENDERED)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    page.close()
    return {"errors": errors, "blocked": blocked, "plots": {p["id"]: p for p in plots}}


def assert_renders(browser: Any, campaign: Path, screenshot: str) -> tuple[str, dict[str, Any]]:
    report = write_report(campaign)
    assert report == campaign.with_suffix(".html") == default_report_path(campaign)
    html = report.read_text()
    result = open_in_browser(browser, report, screenshot)
    assert result["errors"] == []
    assert result["blocked"] == [], "the report asked for the network"
    for plot_id, plot in result["plots"].items():
        assert plot["area"] > 10_000 and plot["marks"] > 0, f"plot {plot_id} is empty: {plot}"
    assert (ARTIFACTS / screenshot).stat().st_size > 10_000
    # One copy of plotly.js, no external scripts or stylesheets.
    assert html.count("* plotly.js v") == 1 and html.count("<script") == 1 + len(result["plots"])
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html)
    return html, result


# ---- reports of real campaigns --------------------------------------------------------------------------


@pytest.mark.slow
def test_single_objective_trmc_report(browser: Any, campaigns: dict[str, Path]) -> None:
    html, result = assert_renders(browser, campaigns["single"], "report-trmc-single.png")
    assert set(result["plots"]) == {"progress", "objectives-vs-parameters", "parallel-coordinates", "model-slices",
                                    "model-loo", "trmc-transients", "timing", "schedule-gantt"}
    with CampaignStore.open(campaigns["single"]) as store:
        info = store.campaign()
        trials = store.trials()
    for text in ("opv-blend-trmc", info["protocol_sha256"], info["stop_reason"], "trmc at sim://trmc",
                 f"botorch {info['versions']['botorch']}", "qLogNoisyExpectedImprovement"):
        assert text in html
    # The hostile description is shown escaped, never executed (no dialog was raised above).
    assert HOSTILE not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    # Every trial has a row in the table.
    for t in trials:
        assert re.search(rf"<tr class=\"state-{t.state}\"><td class=\"num\">{t.id}</td>", html)


@pytest.mark.slow
def test_multi_objective_report_has_pareto_front_and_a_growing_hypervolume(
    browser: Any, campaigns: dict[str, Path]
) -> None:
    html, result = assert_renders(browser, campaigns["multi"], "report-trmc-multi.png")
    assert "pareto" in result["plots"] and "qLogNoisyExpectedHypervolumeImprovement" in html
    with CampaignStore.open(campaigns["multi"]) as store:
        data = load_report_data(store)
    trace = hypervolume_trace(data)
    assert trace is not None
    xs, hv, _ = trace
    assert xs == list(range(1, len(data.results) + 1))
    assert all(b >= a for a, b in itertools.pairwise(hv)) and hv[-1] > 0


@pytest.mark.slow
def test_mbe_report_shows_rheed_temperatures_failures_faults_and_operator_decisions(
    browser: Any, campaigns: dict[str, Path]
) -> None:
    html, result = assert_renders(browser, campaigns["mbe"], "report-mbe.png")
    assert {"mbe-rheed", "temperature-history", "model-slices"} <= set(result["plots"])
    with CampaignStore.open(campaigns["mbe"]) as store:
        trials = store.trials()
        kinds = {e["kind"] for e in store.events()}
    failed = [t for t in trials if t.state == "failed"]
    assert failed and "fault" in kinds and "approval" in kinds, "the campaign should exercise every incident table"
    for t in failed:
        assert t.detail.startswith("wrong phase") and re.search(r"<td>\s*" + re.escape(t.detail[:30]), html)
    assert "instrument fault" in html and "Configuration memory lost" in html
    assert "operator decision" in html and "accepted by operator" in html
    retried = [t for t in trials if t.origin == "retry"]
    assert retried and f"retry of {retried[0].retry_of}" in html
    # The operator's note is in the journal's data, shown escaped.
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html


@pytest.mark.parametrize("which", ["zero", "one"])
@pytest.mark.slow
def test_a_campaign_with_zero_or_one_trial_gives_notes_not_errors(
    browser: Any, campaigns: dict[str, Path], which: str
) -> None:
    html, result = assert_renders(browser, campaigns[which], f"report-{which}-trials.png")
    assert "no model view" in html and html.count("class=\"no-data\"") >= 3
    if which == "zero":
        assert "the campaign has no trials" in html and result["plots"] == {}
    else:
        assert "progress" in result["plots"] and "trmc-transients" in result["plots"]


def test_a_report_can_be_built_from_an_open_store_while_nothing_is_written(campaigns: dict[str, Path]) -> None:
    path = campaigns["one"]
    before = path.read_bytes()
    with CampaignStore.open(path) as store:
        html = build_report(store)
    assert html.startswith("<!DOCTYPE html>") and "opv-blend-trmc" in html
    assert path.read_bytes() == before


def test_a_pool_campaign_shows_the_exact_random_sampling_expectation(tmp_path: Path) -> None:
    pool = ROOT / "protocols" / "data" / "melting_points.csv"
    text = _edited("pool_melting_points.yaml", [("path: data/melting_points.csv", f"path: {pool}"),
                                                ("budget: {trials: 60}", "budget: {trials: 5}"),
                                                ("initial: {method: random, n: 12}", "initial: {method: random, n: 4}")])
    db = _campaign(tmp_path, "pool", text)
    with CampaignStore.open(db) as store:
        data = load_report_data(store)
    block = progress_plot(data)
    assert isinstance(block, Plot)
    (baseline,) = [t for t in block.figure.data if t.name == "random sampling (expected)"]
    values = np.loadtxt(pool, delimiter=",", skiprows=1, usecols=-1)
    assert len(baseline.y) == 5 and baseline.y[0] == pytest.approx(values.mean())
    assert baseline.y[-1] == pytest.approx(random_expected_best(values, 5, maximize=True)[-1])
    assert "exact expectation for random sampling" in block.caption


# ---- the numbers behind the plots -----------------------------------------------------------------------


@pytest.mark.parametrize("maximize", [True, False])
def test_random_sampling_expectation_matches_enumeration(maximize: bool) -> None:
    pool = np.array([3.0, -1.0, 7.5, 2.0, 2.0, 11.0, 0.5])
    expected = random_expected_best(pool, len(pool), maximize)
    pick = max if maximize else min
    for k in range(1, len(pool) + 1):
        draws = [pick(c) for c in itertools.combinations(pool.tolist(), k)]
        assert expected[k - 1] == pytest.approx(sum(draws) / len(draws), rel=1e-12)


def test_leave_one_out_matches_conditioning_on_the_other_points() -> None:
    problem = Problem(SearchSpace((FloatParameter("x", 0.0, 1.0), FloatParameter("z", 1.0, 100.0, log=True))),
                      (Objective("y", maximize=False, log=True),))
    rng = np.random.default_rng(4)
    obs = [Observation({"x": float(x), "z": float(z)}, {"y": float(math.exp(2 * x) * z ** 0.3 + 0.01 * rng.random())})
           for x, z in zip(rng.random(9), 10 ** (2 * rng.random(9)), strict=True)]
    training = build_training_data(problem, SpaceEncoding(problem.space), obs)
    fitted = fit_models(training)
    gp, outcome = fitted.model, fitted.outcomes[0]
    loo = _leave_one_out(gp, outcome, list(range(1, 10)))
    X, y = gp.train_inputs[0].clone(), gp.train_targets.clone()
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        gp.set_train_data(X[keep], y[keep], strict=False)
        with torch.no_grad():
            post = gp.posterior(X[i : i + 1], observation_noise=True)
        mean, sd = float(post.mean.detach()), float(post.variance.detach().sqrt())
        # Minimized and log-scaled: model value = -log10(y), so the band maps back flipped.
        assert loo.predicted[i] == pytest.approx(10 ** -mean, rel=1e-6)
        assert loo.lower[i] == pytest.approx(10 ** -(mean + 2 * sd), rel=1e-6)
        assert loo.measured[i] == pytest.approx(obs[i].values["y"], rel=1e-9)
    gp.set_train_data(X, y, strict=False)


def test_model_view_of_a_campaign_slices_every_searched_parameter(campaigns: dict[str, Path]) -> None:
    with CampaignStore.open(campaigns["multi"]) as store:
        data = load_report_data(store)
    view = model_view(data)
    best = max(data.measured, key=lambda t: t.values["phi_sum_mu_max"])
    assert view.best == best.conditions
    assert {(s.objective, s.parameter) for s in view.slices} == {
        (o, p) for o in ("phi_sum_mu_max", "tau_half") for p in data.searched_parameters}
    for s in view.slices:
        assert all(lo <= m <= hi for lo, m, hi in zip(s.lower, s.mean, s.upper, strict=True))
    for loo in view.loo:
        assert loo.trial_ids == [t.id for t in data.measured if loo.objective in t.values]
    padded = any("failed sample at the worst value" in n for n in view.notes)
    assert padded == any(t.state == "failed" for t in data.results)  # the planner pads failures by default


def test_model_view_uses_the_planners_additive_kernel(campaigns: dict[str, Path]) -> None:
    with CampaignStore.open(campaigns["multi"]) as store:
        data = load_report_data(store)
    planner = data.protocol.planner.model_copy(update={"options": {"kernel": "additive"}})
    view = model_view(replace(data, protocol=data.protocol.model_copy(update={"planner": planner})))
    assert not [n for n in view.notes if "unknown here" in n or n.startswith("GP fit")]
    assert {s.parameter for s in view.slices} == set(data.searched_parameters)
    for s in view.slices:
        assert all(lo <= m <= hi for lo, m, hi in zip(s.lower, s.mean, s.upper, strict=True))


# ---- the command line and live progress ------------------------------------------------------------------


def _closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "closedloop", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd)})


@pytest.mark.slow
def test_run_writes_the_report_at_the_end_and_resume_can_skip_it(tmp_path: Path) -> None:
    protocol = tmp_path / "p.yaml"
    protocol.write_text(_edited("trmc_opv_blend.yaml", [("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 2}")]))
    done = _closedloop("run", str(protocol), "--sim", "--db", "c.sqlite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Not a terminal: plain lines with trial n of N, best so far and an ETA.
    assert re.search(r"\[2/2\] trial 2 \w+: .*\(best phi_sum_mu_max .*; ETA \d+:\d\d:\d\d\)", done.stderr)
    assert "report: c.html" in done.stdout and (tmp_path / "c.html").stat().st_size > 1_000_000
    (tmp_path / "c.html").unlink()
    again = _closedloop("resume", "c.sqlite", "--sim", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "report:" not in again.stdout and not (tmp_path / "c.html").exists()
    out = _closedloop("report", "c.sqlite", "-o", "sub/r.html", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("wrote sub/r.html (") and (tmp_path / "sub/r.html").exists()
    missing = _closedloop("report", "nope.sqlite", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.sqlite" in missing.stderr and "Traceback" not in missing.stderr


def test_a_paused_campaign_gets_its_report_and_a_report_failure_is_only_a_warning(
    branin_protocol: Callable[..., Path], tmp_path: Path
) -> None:
    protocol = branin_protocol(trials=3, n_init=3, options="fault_rate: 1.0", retries=0, on_fault="pause")
    db = tmp_path / "paused.sqlite"
    result = CliRunner().invoke(main, ["run", str(protocol), "--db", str(db), "--quiet"])
    assert result.exit_code == 1 and "paused: " in result.stderr
    assert f"report: {db.with_suffix('.html')}" in result.stderr
    html = db.with_suffix(".html").read_text()
    assert "status</th><td>paused" in html and "instrument fault" in html
    db.with_suffix(".html").unlink()
    db.with_suffix(".html").mkdir()  # the report cannot be written there
    result = CliRunner().invoke(main, ["resume", str(db), "--quiet"])
    assert result.exit_code == 1 and "report not written (OutputPathError" in result.stderr
    assert f"{db.with_suffix('.html')}: is a folder" in result.stderr
    assert f"try: closedloop report {db}" in result.stderr and "Traceback" not in result.output
    assert not list(tmp_path.glob(".*.partial"))


def test_progress_lines_show_trial_n_of_n_state_best_and_eta() -> None:
    problem = Problem(SearchSpace((FloatParameter("x", 0.0, 1.0),)), (Objective("y", maximize=False),))
    stream = io.StringIO()
    reporter = ProgressReporter(problem, total=4, done=1, stream=stream, best=5.0)
    with reporter:
        reporter(TrialStarted(2, "s1", {"x": 0.25}))
        reporter(TrialMeasured(2, Measurement(values={"y": 3.0})))
        reporter(TrialMeasured(3, Measurement(values={"y": 4.0})))
        reporter(TrialAbandoned(4, Abandonment.FAULT, "no reply"))
        reporter(TrialAbandoned(5, Abandonment.OPERATOR_ABORT, "operator absent: standard input closed"))
        reporter(TrialAbandoned(6, Abandonment.INTERRUPTED, "the controller stopped before a result was stored"))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/4] trial 2 running on s1: x=0.25"
    assert re.fullmatch(r"\[2/4\] trial 2 ok: y=3  at x=0.25  \(best y 3; ETA \d+:\d\d:\d\d\)", lines[1])
    assert lines[2].startswith("[3/4] trial 3 ok: y=4  (best y 3;")
    assert lines[3] == "[3/4] trial 4 fault: no reply"
    # Neither an operator's stop nor a crash reads as a fault that would send someone to the instrument.
    assert lines[4:] == ["[3/4] trial 5 stopped: operator absent: standard input closed",
                         "[3/4] trial 6 interrupted: the controller stopped before a result was stored"]
    quiet = io.StringIO()
    with ProgressReporter(problem, total=2, stream=quiet, quiet=True) as r:
        r(TrialMeasured(1, Measurement(values={"y": 1.0})))
        r(TrialAbandoned(2, Abandonment.FAULT, "x"))
    assert quiet.getvalue().splitlines() == ["[1/2] trial 2 fault: x"]

