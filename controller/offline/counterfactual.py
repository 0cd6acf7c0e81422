"""Counterfactual replays: what would another planner have done with the same experiment?

A counterfactual runs a chosen planner (`random` or `botorch`, with options) against a stand-in for the
original campaign's instrument, and writes a new campaign file linked to the original (its `parent`,
and `metadata["counterfactual"]` with the original's path, identity and the data it was built from):

- lookup: the recorded measurements as a pool. The planner may only choose recorded conditions, and
  each "experiment" reveals that trial's recorded outcome (a recorded failure stays a failure).
- surrogate: a GP fitted to the recorded data (planners.models), answering with its posterior mean
  plus noise drawn at the fitted noise level. Results are the surrogate's, with its uncertainty: each
  measurement carries the posterior sd as an artifact, and the comparison reports its mean.
- sim: the protocol's own simulator (the `Campaign.run(sim=True)` path).

Every run is a pure function of (original, spec, seed), so sweeps over seeds go to any executor
(controller.offline.executors) and give the same campaign files.

    >>> result = sweep("opv.sqlite", "cf/", CounterfactualSpec("random", "lookup", budget=3), seeds=[0, 1])
    >>> [run.results for run in result.runs]
    [3, 3]
    >>> print("\\n".join(result.lines()[:2]))
                                                 original (botorch)  ...
    trials (results)                             5 ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any

import numpy as np
import pandas as pd
import torch

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine import history
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.gate import SafetyGate
from closedloop.controller.engine.halts import Halt
from closedloop.controller.offline.executors import ExecutorSpec, run_jobs
from closedloop.controller.protocol.catalog import SIM
from closedloop.controller.protocol.model import Protocol, load_protocol
from closedloop.controller.protocol.yaml_source import edit_protocol_text
from closedloop.controller.store.campaign_store import CampaignStore, software_versions
from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    Limit,
    Measurement,
    SafetyEnvelope,
    Value,
)
from closedloop.planners.encoding import SpaceEncoding, point_key
from closedloop.planners.models import fit_models
from closedloop.planners.outcomes import FEASIBILITY, build_training_data
from closedloop.planners.provenance import data_hash
from closedloop.planners.registry import planner_options
from closedloop.planners.sampling import derive_seed, isolated_rng
from closedloop.planners.space import ChoiceParameter, FixedParameter, Observation, Problem

INSTRUMENTS = ("lookup", "surrogate", "sim")
PLANNERS = ("random", "botorch")


class CounterfactualError(ValueError):
    """The counterfactual cannot run as asked; the message says what to change (exit code 2)."""


@dataclass(frozen=True)
class CounterfactualSpec:
    planner: str
    instrument: str
    options: Mapping[str, Any] = field(default_factory=dict)
    budget: int | None = None  # trials per run; default: as many results as the original has

    def __post_init__(self) -> None:
        if self.planner not in PLANNERS:
            raise CounterfactualError(f"--planner {self.planner!r}: choose one of {', '.join(PLANNERS)}")
        if self.instrument not in INSTRUMENTS:
            raise CounterfactualError(f"--instrument {self.instrument!r}: choose one of {', '.join(INSTRUMENTS)}")
        unknown = sorted(set(self.options) - set(planner_options(self.planner)))
        if unknown:
            accepted = ", ".join(sorted(planner_options(self.planner)))
            raise CounterfactualError(f"planner {self.planner} has no option(s) {unknown}; it accepts: {accepted}")
        if self.budget is not None and self.budget < 1:
            raise CounterfactualError(f"--budget must be at least 1, got {self.budget}")


@dataclass(frozen=True)
class RunSummary:
    """One campaign's headline numbers, on the first objective."""

    path: str
    planner: str
    seed: int
    results: int
    best: float | None
    trials_to_best: int | None  # results until the campaign's own best
    trials_to_reference: int | None  # results until it matched the original's best (None: never)
    surrogate_sd: float | None = None  # mean posterior sd at the points measured (surrogate runs)


@dataclass
class Comparison:
    original: RunSummary
    spec: CounterfactualSpec
    objective: str
    maximize: bool
    runs: list[RunSummary]
    executor: str = ""
    log_scale: bool = False  # the objective is modelled as log10 (the surrogate's sd is in those units)

    def lines(self) -> list[str]:
        """The side-by-side table `closedloop replay --planner` prints."""
        o, runs = self.original, self.runs
        reached = [r.trials_to_reference for r in runs if r.trials_to_reference is not None]
        bests = [r.best for r in runs if r.best is not None]
        label = f"{self.spec.planner} on {self.spec.instrument}, {len(runs)} seed(s)"
        rows = [
            ("trials (results)", str(o.results), f"{median(r.results for r in runs):g} (median)"),
            (
                f"best {self.objective} ({'max' if self.maximize else 'min'}) within the budget",
                _num(o.best),
                f"mean {_num(mean(bests) if bests else None)}, range {_num(min(bests, default=None))} .. "
                f"{_num(max(bests, default=None))}",
            ),
            (
                "trials to reach the original best",
                _num(o.trials_to_best),
                f"{len(reached)}/{len(runs)} reached it; median {_num(median(reached) if reached else None)}",
            ),
            ("trials to its own best", _num(o.trials_to_best),
             f"median {_num(median(r.trials_to_best for r in runs if r.trials_to_best) if bests else None)}"),
        ]
        width = max(len(r[0]) for r in rows)
        out = [f"{'':<{width}}  {'original (' + o.planner + ')':<24}  counterfactual ({label})"]
        out += [f"{name:<{width}}  {a:<24}  {b}" for name, a, b in rows]
        if self.spec.instrument == "surrogate":
            sds = [r.surrogate_sd for r in runs if r.surrogate_sd is not None]
            out.append(
                "results come from a GP surrogate fitted to the recorded trials, not from the instrument: "
                f"mean posterior sd at the measured points {_num(mean(sds) if sds else None)} "
                f"(in the model's units of {self.objective}{', log10' if self.log_scale else ''})"
            )
        out += [f"  {r.path}" for r in runs]
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# ---- summarizing a campaign -------------------------------------------------------------------------


def summarize(path: str | Path, reference: float | None = None) -> RunSummary:
    """Results, best value and trials-to-best of a campaign; `reference`: the value to reach."""
    with Campaign.open(path) as campaign:
        problem = campaign.protocol.to_problem()
        trials = campaign.store.trials()
        obs = history.observations(problem, trials)
        proposers = [t.proposer for t in trials if t.origin != "retry"]
        info = campaign.store.campaign()
        sd = _mean_surrogate_sd(campaign) if info["metadata"].get("counterfactual", {}).get("instrument") == "surrogate" else None
    objective = problem.objectives[0]
    better = (lambda a, b: a >= b) if objective.maximize else (lambda a, b: a <= b)
    best: float | None = None
    to_best = to_reference = None
    for i, o in enumerate(obs, start=1):
        if o.failed or objective.name not in o.values:
            continue
        y = o.values[objective.name]
        if best is None or (better(y, best) and y != best):
            best, to_best = y, i
        if to_reference is None and reference is not None and better(y, reference):
            to_reference = i
    planner = "botorch" if "botorch" in proposers else (proposers[-1] if proposers else "-")
    return RunSummary(str(path), planner, int(info["seed"]), len(obs), best, to_best, to_reference, sd)


def _mean_surrogate_sd(campaign: Campaign) -> float | None:
    sds = []
    for t in campaign.store.trials(states=["measured"]):
        sds += campaign.store.artifacts(t.id).get("surrogate", {}).get("sd", {}).values()
    return float(np.mean(sds)) if sds else None


# ---- the stand-in instruments --------------------------------------------------------------------------


def recorded_pool(problem: Problem, trials: Sequence[Any], outputs: Sequence[str]) -> pd.DataFrame:
    """One row per distinct recorded condition: its latest measured outputs, or NaN for a failed sample
    (the lookup instrument then reports it failed again)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for t in trials:
        if t.state not in history.RESULT_STATES:
            continue
        values = {name: (t.values.get(name, math.nan) if t.state == "measured" else math.nan) for name in outputs}
        rows[point_key(problem.space, t.conditions)] = {**t.conditions, **values}
    return pd.DataFrame(list(rows.values()), columns=[*problem.space.names, *outputs])


class SurrogateInstrument:
    """A GP fitted to recorded observations, as an instrument: posterior mean plus noise at the fitted level.

    Each measurement's `surrogate` artifact holds the posterior mean and sd per quantity (model units),
    so a reader can tell surrogate results from measurements and see how uncertain each one was.
    """

    def __init__(self, problem: Problem, observations: Sequence[Observation], seed: int, duration_s: float) -> None:
        self.problem = problem
        self.encoding = SpaceEncoding(problem.space)
        self.seed = seed
        self.duration_s = duration_s
        data = build_training_data(problem, self.encoding, observations)
        with isolated_rng(derive_seed(seed, "surrogate-fit")):
            self.fitted = fit_models(data)
        self.outcomes = data.outcomes
        limits: dict[str, Limit] = {}
        for p in problem.space.parameters:
            if isinstance(p, ChoiceParameter):
                limits[p.name] = Limit(allowed=tuple(str(v) for v in p.values))
            elif isinstance(p, FixedParameter):
                limits[p.name] = Limit(allowed=(p.value,)) if isinstance(p.value, str) else Limit(p.value, p.value)
            else:
                limits[p.name] = Limit(min=float(p.low), max=float(p.high))
        self._description = DriverDescription(
            "surrogate", SafetyEnvelope(limits), {o.name: "" for o in problem.objectives}
        )

    def describe(self) -> DriverDescription:
        return self._description

    def check(self, conditions: Mapping[str, Value]) -> None:
        self._description.envelope.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        X = self.encoding.encode([dict(conditions)])
        means, f_var, y_var = [], [], []
        with torch.no_grad():
            for outcome, model in zip(self.outcomes, self.fitted.submodels(), strict=True):
                # Posterior's base class declares no mean/variance; the GPyTorch posteriors have them.
                latent: Any = model.posterior(X)
                means.append(float(latent.mean))
                f_var.append(float(latent.variance))
                # The feasibility classifier's likelihood is Bernoulli: its noise is the coin flip below.
                observed: Any = latent if outcome.name == FEASIBILITY else model.posterior(X, observation_noise=True)
                y_var.append(float(observed.variance))
        rng = np.random.default_rng(derive_seed(self.seed, "surrogate-noise", str(ctx.trial_id)))
        values: dict[str, float] = {}
        failed = False
        for k, outcome in enumerate(self.outcomes):
            sampled = means[k] + math.sqrt(max(y_var[k] - f_var[k], 0.0)) * rng.standard_normal()
            if outcome.name == FEASIBILITY:
                failed = rng.random() > self.fitted.success_probability(means[k], f_var[k])
                continue
            plain = outcome.sign * sampled  # undo to_model: sign is +-1, then the log10
            values[outcome.name] = 10.0**plain if outcome.log else plain
        ctx.journal("tx", "SURROGATE " + " ".join(f"{k}={v}" for k, v in conditions.items()))
        ctx.clock.sleep(self.duration_s)
        ctx.journal("rx", " ".join(f"{k}={v!r}" for k, v in values.items()) or "failed sample")
        names = [o.name for o in self.outcomes]
        summary = {"mean": dict(zip(names, means, strict=True)),
                   "sd": {n: math.sqrt(max(v, 0.0)) for n, v in zip(names, f_var, strict=True)}}
        return Measurement(
            values={} if failed else values,
            units={o.name: "" for o in self.problem.objectives} if not failed else {},
            status="failed_sample" if failed else "ok",
            artifacts={"surrogate": summary},
            analysis="gp-surrogate",
            analysis_version="1",
            instrument="surrogate",
            detail="GP surrogate of the recorded campaign: posterior mean plus sampled noise",
            duration_s=self.duration_s,
        )

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return None

    def safe_state(self) -> None:
        pass

    def close(self) -> None:
        pass


# ---- building and running one counterfactual campaign -------------------------------------------------


def _protocol_text(original: Protocol, spec: CounterfactualSpec, seed: int, budget: int, pool: Path | None) -> str:
    """The original protocol with the chosen planner and seed, the budget, no early stop, no operator."""

    def edit(data: Any) -> None:
        planner = data.setdefault("planner", {})
        planner["seed"] = seed
        previous = original.planner
        if spec.planner == "random":
            planner["acquisition"] = "random"
            planner["options"] = {}
        else:
            if previous.acquisition == "random":
                planner["acquisition"] = "auto"
            planner["options"] = {**(previous.options if previous.acquisition != "random" else {}), **spec.options}
        initial = {k: spec.options[k] for k in ("n_initial", "initial_method") if k in spec.options}
        planner["options"] = {k: v for k, v in planner["options"].items() if k not in ("n_initial", "initial_method")}
        if initial:
            planner["initial"] = {"method": initial.get("initial_method", previous.initial.method),
                                  "n": initial.get("n_initial", previous.initial.n)}
        data["budget"] = {"trials": budget}
        data["stop"] = {"target_reached": False}
        data["approval"] = "none"
        data.setdefault("failures", {})["on_fault"] = "continue"
        if pool is not None:
            data["instrument"] = {"driver": f"{SIM}lookup"}
            data["candidates"] = {"path": str(pool)}

    return edit_protocol_text(original.text, edit)[0]


@dataclass(frozen=True)
class _Run:
    original: str
    out: str
    spec: CounterfactualSpec
    seed: int


def run_counterfactual(job: _Run) -> str:
    """Write and run one counterfactual campaign; returns its path. A module-level function: a sweep job."""
    original, out = Path(job.original), Path(job.out)
    with Campaign.open(original) as source:
        problem = source.protocol.to_problem()
        trials = source.store.trials()
        info = source.store.campaign()
        protocol = source.protocol
    obs = history.observations(problem, trials)
    if not any(not o.failed for o in obs):
        raise CounterfactualError(f"{original}: no measured trial to build a {job.spec.instrument} instrument from")
    budget = job.spec.budget or len(obs)
    pool_path = None
    if job.spec.instrument == "lookup":
        outputs = [o.name for o in problem.objectives] + [c.name for c in problem.outcome_constraints]
        pool = recorded_pool(problem, trials, list(dict.fromkeys(outputs)))
        if budget > len(pool):
            raise CounterfactualError(
                f"budget {budget} exceeds the {len(pool)} distinct recorded conditions of the lookup pool; lower --budget"
            )
        pool_path = out.with_name(out.stem + ".pool.csv")
        pool.to_csv(pool_path, index=False)
    text = _protocol_text(protocol, job.spec, job.seed, budget, pool_path.resolve() if pool_path else None)
    protocol_path = out.with_name(out.stem + ".protocol.yaml")
    protocol_path.write_text(text)
    new_protocol = load_protocol(protocol_path)
    link = {
        "original": str(original.resolve()),
        "original_name": info["name"],
        "original_created_at": info["created_at"],
        "original_protocol_sha256": info["protocol_sha256"],
        "original_data_hash": data_hash(obs, []),
        "original_results": len(obs),
        "planner": job.spec.planner,
        "options": dict(job.spec.options),
        "instrument": job.spec.instrument,
        "seed": job.seed,
    }
    store = CampaignStore.create(
        out, name=new_protocol.name, protocol_text=text, protocol_path=str(protocol_path.resolve()), seed=job.seed,
        versions=software_versions(), parent=str(original.resolve()), metadata={"counterfactual": link}, durable=False,
    )
    with Campaign(store, new_protocol) as campaign:
        if job.spec.instrument == "surrogate":
            durations = [t.duration_s for t in trials if t.duration_s]
            surrogate = SurrogateInstrument(problem, obs, job.seed, float(median(durations)) if durations else 60.0)
            _run_with_driver(campaign, surrogate)
        else:
            campaign.run(sim=True)
    return str(out)


def _run_with_driver(campaign: Campaign, driver: SurrogateInstrument) -> Halt:
    """The campaign's engine in virtual time, with `driver` as its only station. The surrogate takes
    conditions in the protocol's units, so its gate converts nothing."""
    gate = SafetyGate(campaign.protocol.to_problem().space, driver.describe().envelope, dict)
    return campaign.run_with([Station(name="surrogate", driver=driver, virtual=True)], gate=gate)


def sweep(
    original: str | Path,
    out_dir: str | Path,
    spec: CounterfactualSpec,
    seeds: Sequence[int],
    executor: ExecutorSpec | None = None,
) -> Comparison:
    """One counterfactual campaign per seed (in `out_dir`, never overwriting), then the comparison."""
    original, out_dir = Path(original), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executor = executor or ExecutorSpec()
    jobs = []
    for seed in seeds:
        out = out_dir / f"{original.stem}-{spec.planner}-{spec.instrument}-seed{seed}.sqlite"
        if out.exists():
            raise CounterfactualError(f"{out} already exists; choose another --out folder or remove it")
        jobs.append(_Run(str(original), str(out), spec, seed))
    paths = dict(run_jobs(run_counterfactual, jobs, executor))
    reference = summarize(original)
    with Campaign.open(original) as source:
        problem = source.protocol.to_problem()
    runs = [summarize(paths[i], reference.best) for i in range(len(jobs))]
    first = problem.objectives[0]
    return Comparison(reference, spec, first.name, first.maximize, runs, executor.describe(), first.log)
