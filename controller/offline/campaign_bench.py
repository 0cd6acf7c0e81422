"""Campaign benchmarks: whole campaigns on the real path, judged by the simulator's ground truth.

Each run is a real `Campaign` with `sim=True` (protocol -> engine -> safety gate -> driver -> the
instrument's in-process emulator, virtual time, a real SQLite file), with the protocol's budget and stop
rules overridden so that the run goes long enough to be measured. The noisy measurements drive the
planner, as in the lab; the benchmark judges every trial by the simulator's noise-free value at the
conditions that were run, against the best value reachable in the protocol's space. Failed samples are
trials like any other: they cost an experiment and count.

    >>> report = run_campaign_benchmark("protocols/mbe_srruo3.yaml", seeds=[0], planners=["random"],
    ...                                 budgets={"random": 3})
    >>> report["truth"]["quantity"], report["planners"]["random"]["budget"], len(report["planners"]["random"]["seeds"])
    ('rrr', 3, 1)
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.history import RESULT_STATES
from closedloop.controller.engine.stations import stand_in
from closedloop.controller.offline.bench_metrics import censored_median
from closedloop.controller.offline.pool_bench import configure_worker, software_versions
from closedloop.controller.protocol.model import Protocol, load_protocol
from closedloop.controller.protocol.sections import ChoiceSpec, FixedSpec, IntSpec
from closedloop.controller.protocol.yaml_source import edit_protocol_text
from closedloop.drivers.base import Value
from closedloop.simulators.truth import GroundTruth, SearchRegion

REACH_FRACTION = 0.9  # a trial "reaches" the optimum when its true value is >= 90 % of it
DEFAULT_BUDGETS: dict[str, int] = {"botorch": 60, "random": 150}
MIN_RATIO = 2.0  # random must need at least twice as many trials as BoTorch


class CampaignBenchError(ValueError):
    """The protocol or the settings cannot be benchmarked; the message says what to change."""


@dataclass(frozen=True)
class IssueTarget:
    issue: int
    max_median: float  # BoTorch's median trials to REACH_FRACTION of the optimum, at most


# What the issues ask of each instrument's example campaign.
# By the quantity the simulator judges (the TRMC film's phi_sum_mu_max, the MBE film's RRR).
ISSUE_TARGETS: dict[str, IssueTarget] = {"phi_sum_mu_max": IssueTarget(6, 25), "rrr": IssueTarget(7, 35)}


@dataclass(frozen=True)
class TrialOutcome:
    """One trial that produced data (a measurement or a failed sample), as the store has it."""

    trial_id: int
    state: str  # "measured" or "failed"
    conditions: dict[str, Value]


@dataclass(frozen=True)
class SeedRun:
    planner: str
    seed: int
    budget: int
    trials: list[TrialOutcome]
    stop_reason: str
    planner_errors: int  # proposals the engine had to take from its fallback planner
    wall_s: float


@dataclass(frozen=True)
class RunSpec:
    """What one worker runs: a benchmark protocol text (overrides applied) for one planner and seed."""

    protocol_text: str
    planner: str
    seed: int
    budget: int
    workdir: str


# ---- ground truth ------------------------------------------------------------------------------


_TRUTHS: dict[str, GroundTruth] = {}  # by protocol text: the optimum search takes seconds


def ground_truth(protocol: Protocol) -> GroundTruth:
    """The simulator's truth for the protocol's instrument over the protocol's space, from the simulator
    that stands in for it (`simulators.registry`: the TRMC film model, the SrRuO3 growth model)."""
    _require_instrument_units(protocol)
    simulator = stand_in(protocol)
    if simulator is None or simulator.ground_truth is None:
        raise CampaignBenchError(
            f"{protocol.path}: campaign benchmarks judge a campaign by its simulator's noise-free optimum; the "
            f"simulator of instrument driver {protocol.description_of_instrument().name!r} has none (use `closedloop bench` "
            "for pool data)"
        )
    if protocol.sha256 not in _TRUTHS:
        try:
            _TRUTHS[protocol.sha256] = simulator.ground_truth(
                protocol.instrument_options(), search_region(protocol), protocol.objective_units()
            )
        except ValueError as e:
            raise CampaignBenchError(f"{protocol.path}: {e}") from None
    return _TRUTHS[protocol.sha256]


def search_region(protocol: Protocol) -> SearchRegion:
    """The protocol's space as the simulators' optimizers take it (in the protocol's units, which
    `_require_instrument_units` has checked are the instrument's)."""
    ranges, steps, choices, fixed = {}, {}, {}, {}
    for name, spec in protocol.space.items():
        if isinstance(spec, ChoiceSpec):
            choices[name] = tuple(str(v) for v in spec.values)
        elif isinstance(spec, FixedSpec):
            fixed[name] = spec.value
        else:
            ranges[name] = (float(spec.low), float(spec.high))
            if isinstance(spec, IntSpec):
                steps[name] = spec.step
    constraints = tuple(c.evaluate for c in protocol.linear_constraints())
    return SearchRegion(ranges, steps, choices, fixed, constraints)


def _require_instrument_units(protocol: Protocol) -> None:
    """The truth functions take the instrument's units; a space in other units would be misjudged."""
    limits = protocol.description_of_instrument().envelope.limits
    for name, spec in protocol.space.items():
        unit = getattr(spec, "unit", None)
        limit = limits.get(name)
        if unit and limit is not None and limit.allowed is None and limit.unit and unit != limit.unit:
            raise CampaignBenchError(
                f"{protocol.path}: space.{name} is in {unit!r} but the instrument takes {limit.unit!r}; "
                f"write the range in {limit.unit} for the benchmark"
            )


# ---- one benchmark run -------------------------------------------------------------------------


def benchmark_protocol_text(protocol: Protocol, planner: str, budget: int) -> tuple[str, dict[str, Any]]:
    """The protocol's text with the benchmark's overrides (a fixed budget, no early stop, no operator, and
    for `random` uniform random sampling for every trial), and what changed: {section: {from, to}}."""
    if planner not in DEFAULT_BUDGETS:
        raise CampaignBenchError(f"unknown planner {planner!r}; choose from {', '.join(DEFAULT_BUDGETS)}")
    if budget < 1:
        raise CampaignBenchError(f"the {planner} budget must be at least 1 trial, got {budget}")
    def edit(data: Any) -> None:
        data["budget"] = {"trials": budget}
        data["stop"] = {"no_improvement": None, "target_reached": False}
        data["approval"] = "none"
        if planner == "random":
            planner_section = dict(data.get("planner") or {})
            initial = dict(planner_section.get("initial") or {})
            planner_section.update(acquisition="random", initial={**initial, "method": "random"})
            planner_section.pop("options", None)  # BoTorch's options mean nothing to the random planner
            data["planner"] = planner_section
        elif (data.get("planner") or {}).get("acquisition") == "random":
            raise CampaignBenchError(f"{protocol.path}: planner.acquisition is random; the botorch run needs auto")

    return edit_protocol_text(protocol.text, edit)


def run_seed(spec: RunSpec) -> SeedRun:
    """One whole campaign in virtual time; a module-level function so worker processes can run it."""
    workdir = Path(spec.workdir)
    name = f"{spec.planner}-seed{spec.seed}"
    protocol_path = workdir / f"{name}.yaml"
    protocol_path.write_text(spec.protocol_text)
    db = workdir / f"{name}.sqlite"
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    with Campaign.create(protocol_path, db, seed=spec.seed, sim=True) as campaign:
        stop_reason = campaign.run(sim=True).text
        trials = campaign.store.trials()
        errors = len(campaign.store.events(kinds=["planner_error"]))
    wall_s = time.perf_counter() - started
    outcomes = [
        TrialOutcome(t.id, t.state, dict(t.conditions))
        for t in sorted(trials, key=lambda t: t.id)
        if t.state in RESULT_STATES
    ]
    return SeedRun(spec.planner, spec.seed, spec.budget, outcomes, stop_reason, errors, wall_s)


# ---- judging -----------------------------------------------------------------------------------


def trials_to_reach(fractions: Sequence[float], threshold: float = REACH_FRACTION) -> int | None:
    """The 1-based trial at which the true value first reaches `threshold` of the optimum, or None."""
    return next((i + 1 for i, f in enumerate(fractions) if f >= threshold), None)


def judge(run: SeedRun, truth: GroundTruth, to_instrument: Callable[[dict[str, Value]], dict[str, Value]]) -> dict[str, Any]:
    """One seed's record: each trial's true value as a fraction of the optimum, and when it first reached
    REACH_FRACTION. A failed sample is judged by its conditions' truth like any other trial: the
    benchmark asks whether the planner ran the right conditions, and a film that failed by chance at good
    conditions (TRMC's 2 % baseline) was still the right choice; where the conditions cannot give the
    quantity at all (an MBE wrong phase) the truth is 0."""
    fractions = [truth.value(to_instrument(t.conditions)) / truth.optimum_value for t in run.trials]
    best_so_far = [max(fractions[: i + 1]) for i in range(len(fractions))]
    reached = trials_to_reach(fractions)
    return {
        "seed": run.seed,
        "trials": len(run.trials),
        "trials_to_target": reached,
        "best_true_fraction": round(best_so_far[-1], 4) if best_so_far else None,
        "best_true_fraction_at": {str(n): round(best_so_far[n - 1], 4) for n in (10, 25, 35, 50, 100) if n <= len(best_so_far)},
        "failed_samples": sum(t.state == "failed" for t in run.trials),
        "failed_before_target": sum(t.state == "failed" for t in run.trials[: reached or len(run.trials)]),
        "planner_errors": run.planner_errors,
        "stop_reason": run.stop_reason,
        "wall_s": round(run.wall_s, 2),
        "true_fraction_per_trial": [round(f, 4) for f in fractions],
    }


def summarize(records: Sequence[dict[str, Any]], budget: int) -> dict[str, Any]:
    reached = [r["trials_to_target"] for r in records]
    return {
        "budget": budget,
        "trials_to_target": reached,
        "median_trials_to_target": censored_median(reached),
        "reached": sum(r is not None for r in reached),
        "wall_s_total": round(sum(r["wall_s"] for r in records), 1),
        "wall_s_per_seed_median": round(sorted(r["wall_s"] for r in records)[len(records) // 2], 1) if records else None,
        "planner_errors": sum(r["planner_errors"] for r in records),
        "seeds": list(records),
    }


def compare(planners: Mapping[str, dict[str, Any]], target: IssueTarget | None) -> dict[str, Any]:
    """Random's median over BoTorch's, and whether the issue's targets are met. A censored random median
    (not reached in half its runs) gives only a lower bound: its budget over BoTorch's median."""
    bo, rnd = planners.get("botorch"), planners.get("random")
    out: dict[str, Any] = {"reach_fraction": REACH_FRACTION, "min_ratio": MIN_RATIO}
    if target is not None:
        out.update(issue=target.issue, max_median=target.max_median)
    if bo is None or rnd is None:
        return out
    m_bo, m_rnd = bo["median_trials_to_target"], rnd["median_trials_to_target"]
    ratio = m_rnd / m_bo if m_bo and m_rnd else None
    lower = rnd["budget"] / m_bo if m_bo and m_rnd is None else None
    out.update(ratio=ratio, ratio_lower_bound=lower)
    if target is not None:
        out["botorch_median_met"] = m_bo is not None and m_bo <= target.max_median
        out["ratio_met"] = (ratio or lower or 0.0) >= MIN_RATIO
    return out


# ---- the whole benchmark -----------------------------------------------------------------------


def run_campaign_benchmark(
    protocol_path: str | Path,
    seeds: Sequence[int],
    planners: Sequence[str] = ("botorch", "random"),
    budgets: Mapping[str, int] | None = None,
    workers: int = 1,
    workdir: str | Path | None = None,
    progress: Callable[[SeedRun], None] | None = None,
) -> dict[str, Any]:
    """Every (planner, seed) campaign, judged by the truth; the JSON-ready report."""
    protocol = load_protocol(protocol_path)
    budgets = {**DEFAULT_BUDGETS, **(budgets or {})}
    texts: dict[str, str] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for planner in planners:
        texts[planner], overrides[planner] = benchmark_protocol_text(protocol, planner, budgets[planner])
    started = time.perf_counter()
    truth = ground_truth(protocol)
    truth_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as scratch:
        where = Path(workdir) if workdir else Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        specs = [
            RunSpec(texts[p], p, s, budgets[p], str(where))
            for p in planners for s in seeds
        ]
        runs = _run_all(specs, workers, progress)
    wall_s = time.perf_counter() - started
    per_planner = {}
    for planner in planners:
        records = [judge(r, truth, protocol.to_instrument_units) for r in runs if r.planner == planner]
        per_planner[planner] = summarize(sorted(records, key=lambda r: r["seed"]), budgets[planner])
    target = ISSUE_TARGETS.get(truth.quantity)
    return {
        "benchmark": "campaign",
        "protocol": {"name": protocol.name, "path": str(protocol_path), "sha256": protocol.sha256},
        "seeds": list(seeds),
        "reach_fraction": REACH_FRACTION,
        "overrides": overrides,
        "truth": {
            "quantity": truth.quantity,
            "unit": truth.unit,
            "optimum_value": truth.optimum_value,
            "target_value": REACH_FRACTION * truth.optimum_value,
            "optimum_conditions": truth.optimum_conditions,
            "method": truth.method,
            "seconds": round(truth_s, 2),
        },
        "planners": per_planner,
        "comparison": compare(per_planner, target),
        "workers": workers,
        "wall_time_s": round(wall_s, 1),
        "machine": machine(),
        "software": {**software_versions(), **git_state()},
    }


def _run_all(specs: Sequence[RunSpec], workers: int, progress: Callable[[SeedRun], None] | None) -> list[SeedRun]:
    report = progress or (lambda run: None)
    if workers <= 1:
        configure_worker()
        runs = []
        for spec in specs:
            runs.append(run_seed(spec))
            report(runs[-1])
        return runs
    # spawn: a forked torch with threads already started can deadlock; each worker sets one thread.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=configure_worker) as pool:
        futures = [pool.submit(run_seed, spec) for spec in specs]
        runs = []
        for future in futures:
            runs.append(future.result())
            report(runs[-1])
        return runs


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def git_state() -> dict[str, Any]:
    """The closedloop commit the numbers came from, and whether the tree had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}
