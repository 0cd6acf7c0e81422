"""Offline replay: the audit re-derives recorded proposals, counterfactuals run other planners against
recorded data, and sweeps give the same campaign files on every executor (issue #8)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest
from click.testing import CliRunner

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from closedloop.controller.engine.halts import HaltKind
from closedloop.controller.offline.audit import audit
from closedloop.controller.offline.counterfactual import CounterfactualError, CounterfactualSpec, sweep
from closedloop.controller.offline.executors import ExecutorError, ExecutorSpec
from closedloop.controller.offline.pool_bench import BenchSettings, load_pool, run_all
from closedloop.controller.protocol.model import load_protocol
from tests import paths
from tests.controller.engine.test_serial_campaign import emulator, run_over_pty

ROOT = paths.ROOT


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "closedloop", *args], capture_output=True, text=True,
                          timeout=280, cwd=ROOT)


def edit_campaign(db: Path, sql: str, *params: object) -> None:
    """Change a recorded campaign behind the store's back, as a careless (or dishonest) hand would."""
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.fixture(scope="module")
def trmc_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recorded 30-trial TRMC campaign (in-process station emulator, virtual time) on one objective,
    its conditions spread by a space-filling design: the pool counterfactuals replay against."""
    folder = tmp_path_factory.mktemp("trmc")
    text = (ROOT / "protocols" / "trmc_opv_blend.yaml").read_text()
    for old, new in (
        ("budget: {trials: 40, wall_time: 12 h}", "budget: {trials: 30}"),
        ("initial: {method: sobol, n: 8}", "initial: {method: sobol, n: 30}"),
    ):
        assert old in text
        text = text.replace(old, new)
    # One objective (the example may name a second one) and no early stop.
    text = re.sub(r"\n  tau_half: +\{direction.*\n", "\n", text)
    text = re.sub(r"\nstop: .*\n", "\n", text)
    protocol = folder / "trmc.yaml"
    protocol.write_text(text)
    assert [o.name for o in load_protocol(protocol).to_problem().objectives] == ["phi_sum_mu_max"]
    with Campaign.create(protocol, folder / "trmc.sqlite") as c:
        assert c.run().kind is HaltKind.BUDGET
    return folder / "trmc.sqlite"


# ---- audit ----------------------------------------------------------------------------------------


def test_audit_of_an_in_process_batch_campaign_matches_every_proposal(branin_protocol, tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite"
    with Campaign.create(branin_protocol(trials=8, n_init=3, batch=2), db) as c:
        c.run()
    report = audit(db)
    assert report.all_match and len(report.audited) == 8 and report.matched == 8, report.lines()
    assert report.max_rel_difference == 0.0
    assert "8 of 8 proposals re-derived identically (100 %)" in report.lines()[0]


@pytest.mark.slow
def test_a_campaign_recorded_over_a_real_pty_audits_100_percent_and_edits_are_caught(tmp_path: Path) -> None:
    with emulator("--time-scale", "36000", "--seed", "5") as path:
        done, db = run_over_pty(tmp_path, path, trials=8, initial=4)
    assert done.returncode == 0, done.stderr
    with Campaign.open(db) as c:
        assert [t.instrument for t in c.store.trials()] == ["serial"] * 8
        assert {c.store.proposal(t).provenance.design for t in range(5, 9)} == {"model"}

    # Audited on "another machine": a copy of the file, no emulator running, no instrument built.
    done = cli("replay", str(db), "--workers", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 of 8 proposals re-derived identically (100 %)" in done.stdout

    # A recorded proposal edited after the fact: trial 6 names the parameter and both values.
    edited = tmp_path / "edited.sqlite"
    edited.write_bytes(db.read_bytes())
    edit_campaign(edited, "UPDATE trials SET conditions = json_set(conditions, '$.gas_flow', 123.0) WHERE id = 6")
    done = cli("replay", str(edited), "--workers", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH trial 6 (botorch): gas_flow: recorded 123.0, replayed" in done.stdout

    # A measured value edited: the next proposal's inputs no longer hash as recorded, and the audit names
    # the trial whose data the planner first saw there.
    tampered = tmp_path / "tampered.sqlite"
    tampered.write_bytes(db.read_bytes())
    edit_campaign(tampered, "UPDATE measurements SET value = value * 0.5 WHERE trial_id = 5")
    done = cli("replay", str(tampered), "--workers", "1")
    assert done.returncode == 1
    assert "MISMATCH trial 6 (botorch): the data the planner was given hashes to" in done.stdout
    assert "changed data among trial(s) 5)" in done.stdout
    assert "MISMATCH trial 5" not in done.stdout  # trial 5's own proposal did not depend on its result


def test_replay_refuses_bad_input_with_exit_code_2(tmp_path: Path, trmc_pool: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["replay", str(tmp_path / "missing.sqlite")])
    assert result.exit_code == 2 and "no campaign file at this path" in result.output
    result = runner.invoke(main, ["replay", str(trmc_pool), "--planner", "botorch", "--option", "bogus=1"])
    assert result.exit_code == 2 and "has no option(s) ['bogus']" in result.output
    result = runner.invoke(main, ["replay", str(trmc_pool), "--budget", "5"])
    assert result.exit_code == 2 and "add --planner" in result.output
    with pytest.raises(ExecutorError, match="--dask-scheduler needs --executor dask"):
        ExecutorSpec("process", 2, "tcp://127.0.0.1:1")
    with pytest.raises(CounterfactualError, match="exceeds the 30 distinct recorded conditions"):
        sweep(trmc_pool, tmp_path / "cf", CounterfactualSpec("random", "lookup", budget=31), [0], ExecutorSpec("process", 1))


# ---- counterfactuals ---------------------------------------------------------------------------------


def _values_by_conditions(db: Path) -> dict[tuple, float]:
    with Campaign.open(db) as c:
        return {tuple(sorted(t.conditions.items())): t.values["phi_sum_mu_max"] for t in c.store.trials(states=["measured"])}


@pytest.mark.slow
def test_botorch_beats_random_on_the_recorded_trmc_pool(trmc_pool: Path, tmp_path: Path) -> None:
    seeds = range(4)
    workers = ExecutorSpec("process", 2)
    spec = dict(instrument="lookup", options={"n_initial": 3}, budget=10)
    random = sweep(trmc_pool, tmp_path / "cf", CounterfactualSpec("random", **spec), seeds, workers)
    botorch = sweep(trmc_pool, tmp_path / "cf", CounterfactualSpec("botorch", **spec), seeds, workers)
    # Ten picks out of the thirty recorded films: the model finds better ones than chance, on average and
    # in how often it reaches the best film of the original campaign.
    assert mean(r.best for r in botorch.runs) > 1.15 * mean(r.best for r in random.runs)
    reached = [sum(r.trials_to_reference is not None for r in x.runs) for x in (random, botorch)]
    assert reached[1] >= reached[0]
    assert botorch.original.best == max(_values_by_conditions(trmc_pool).values())

    recorded = _values_by_conditions(trmc_pool)
    for run in random.runs + botorch.runs:
        with Campaign.open(run.path) as c:
            info = c.store.campaign()
            assert info["parent"] == str(trmc_pool.resolve())
            link = info["metadata"]["counterfactual"]
            assert link["original"] == str(trmc_pool.resolve()) and link["instrument"] == "lookup"
            assert c.status()["results"] == 10
        # Every counterfactual "measurement" is the recorded outcome of the same conditions.
        for key, value in _values_by_conditions(Path(run.path)).items():
            assert recorded[key] == value
    table = "\n".join(botorch.lines())
    assert "trials to reach the original best" in table and "botorch on lookup, 4 seed(s)" in table


def test_dask_local_cluster_writes_the_same_campaigns_as_local_processes(trmc_pool: Path, tmp_path: Path) -> None:
    spec = CounterfactualSpec("botorch", "lookup", {"n_initial": 2, "num_restarts": 2, "raw_samples": 32}, budget=4)
    by_process = sweep(trmc_pool, tmp_path / "p", spec, [0, 1], ExecutorSpec("process", 1))
    by_dask = sweep(trmc_pool, tmp_path / "d", spec, [0, 1], ExecutorSpec("dask", 1, dask_processes=False))
    assert by_dask.executor == "dask in this process"
    for a, b in zip(by_process.runs, by_dask.runs, strict=True):
        with Campaign.open(a.path) as ca, Campaign.open(b.path) as cb:
            left = [(t.conditions, t.values) for t in ca.store.trials()]
            right = [(t.conditions, t.values) for t in cb.store.trials()]
        assert left == right and len(left) == 4
    assert [r.best for r in by_process.runs] == [r.best for r in by_dask.runs]


def test_a_surrogate_counterfactual_says_its_results_are_a_surrogates(trmc_pool: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(trmc_pool), "--planner", "random", "--instrument", "surrogate",
                                       "--budget", "4", "--workers", "1", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "results come from a GP surrogate fitted to the recorded trials" in result.output
    (path,) = (tmp_path / "s").glob("*.sqlite")
    with Campaign.open(path) as c:
        trials = c.store.trials()
        # The recorded films include failed ones: the surrogate's feasibility model may fail a sample too.
        assert len(trials) == 4 and {t.state for t in trials} <= {"measured", "failed"}
        for t in trials:
            if t.state == "failed":
                continue
            sd = c.store.artifacts(t.id)["surrogate"]["sd"]["phi_sum_mu_max"]
            assert 0 < sd < 2  # log10 units: the surrogate is uncertain, but not clueless, inside the data
            assert 1e-6 < t.values["phi_sum_mu_max"] < 1  # back on the instrument's scale, not log10


# ---- bench on the executors ----------------------------------------------------------------------------


def test_bench_gives_the_same_runs_on_dask_as_in_process() -> None:
    inputs = ["x_A", "Z_mean", "X_pauling_mean", "X_pauling_absdiff", "period_mean", "group_mean",
              "atomic_radius_mean", "IE1_mean", "EA_mean"]
    pool = load_pool(ROOT / "protocols" / "data" / "melting_points.csv", inputs, "Tm_K", "max")
    settings = BenchSettings(planners=("random",), seeds=(0, 1, 2), budget=12, init=3)
    here = run_all(pool, settings, workers=1)
    on_dask = run_all(pool, settings, executor=ExecutorSpec("dask", 1, dask_processes=False))
    assert [r.order for r in here] == [r.order for r in on_dask] and len(here) == 3
