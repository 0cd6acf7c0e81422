"""Audit a recorded campaign: re-derive every proposal from what the planner saw, and compare.

For each planner call recorded in a campaign file, the audit rebuilds the planner's inputs at that
moment from the journal alone (which trials existed, their states, conditions and measured values as of
the event just before the call's first trial was stored), checks that they hash to the recorded
`data_hash` (a different hash is itself a finding: the record was changed, or the reconstruction is
wrong), rebuilds the planner from the stored protocol, calls `propose` with the recorded seed, and
compares the conditions with the recorded ones: labels and integers exactly, floats to a relative
1e-9 (bit for bit is expected with the recording's processor and libraries; the report names any that
differ, since a GP fit's last digits depend on them). No instrument is needed: no driver is built.

    >>> report = audit("opv.sqlite")   # a campaign recorded on another machine, before CPUs were recorded
    >>> [c.verdict for c in report.checks if c.verdict == "data"], report.max_rel_difference < 1e-2
    ([], True)
    >>> print(report.lines()[0])
    opv.sqlite: ... of 6 proposals re-derived identically (...); largest relative difference ...
    >>> "cpu not recorded" in report.environment_differences[0]
    True
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine import history
from closedloop.controller.engine.build import planner_spec, settings_from
from closedloop.controller.engine.engine import SEED_STRIDE
from closedloop.controller.offline.executors import ExecutorSpec, run_jobs
from closedloop.controller.store.file import software_versions
from closedloop.controller.store.reads import TrialRecord
from closedloop.planners.provenance import Provenance, data_hash
from closedloop.planners.registry import make_planner, options_as_of
from closedloop.planners.space import Conditions, Observation, Problem

REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PlannerCall:
    """One recorded planner call and everything needed to make it again."""

    trial_ids: tuple[int, ...]  # the trials it proposed, in order
    recorded: tuple[Conditions, ...]  # their conditions as proposed (before any operator edit)
    planner: str
    seed: int
    n: int
    observations: tuple[Observation, ...]
    pending: tuple[Conditions, ...]
    recorded_hash: str | None
    replayed_hash: str
    input_ids: frozenset[int]  # trials whose data the planner was given
    recorded_fallback: str | None = None
    problems: tuple[str, ...] = ()  # what made the inputs unusable (the call is then not re-run)
    planner_version: str | None = None  # as recorded: an older version is rebuilt with its old defaults
    pending_fidelities: tuple[str | None, ...] = ()  # with fidelities: the source measuring each pending point


@dataclass(frozen=True)
class ProposalCheck:
    trial_id: int
    planner: str
    verdict: str  # "match", "mismatch" (conditions differ), "data" (inputs do not hash as recorded), "skipped"
    differences: tuple[str, ...] = ()
    max_rel_difference: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict in ("match", "skipped")


@dataclass
class AuditReport:
    campaign: str
    checks: list[ProposalCheck] = field(default_factory=list)
    seconds: float = 0.0
    executor: str = "this process"
    # Where the recording's processor or numerical libraries differ from this replay's (or were not
    # recorded): GP fits then agree only to their last digits, which the optimizer can amplify.
    environment_differences: tuple[str, ...] = ()

    @property
    def audited(self) -> list[ProposalCheck]:
        return [c for c in self.checks if c.verdict != "skipped"]

    @property
    def matched(self) -> int:
        return sum(c.verdict == "match" for c in self.checks)

    @property
    def all_match(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def max_rel_difference(self) -> float:
        return max((c.max_rel_difference for c in self.audited), default=0.0)

    def lines(self) -> list[str]:
        audited = self.audited
        share = 100.0 * self.matched / len(audited) if audited else 100.0
        out = [
            f"{self.campaign}: {self.matched} of {len(audited)} proposals re-derived identically ({share:.0f} %); "
            f"largest relative difference {self.max_rel_difference:.3g}; {self.seconds:.1f} s on {self.executor}"
        ]
        for check in self.checks:
            if check.verdict in ("mismatch", "data"):
                out += [f"  MISMATCH trial {check.trial_id} ({check.planner}): {d}" for d in check.differences]
        if self.environment_differences:
            out.append(
                "  recorded elsewhere: " + "; ".join(self.environment_differences) + ". Model-based proposals are "
                "re-derived bit for bit only with the recording's processor and libraries; here small differences "
                "in the GP fit can move them (their inputs are checked exactly all the same)"
            )
        skipped = [c for c in self.checks if c.verdict == "skipped"]
        if skipped:
            out.append(
                "  not planner decisions, not re-derived: "
                + "; ".join(f"trial {c.trial_id} ({', '.join(c.differences)})" for c in skipped)
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "audited": len(self.audited),
            "matched": self.matched,
            "all_match": self.all_match,
            "max_rel_difference": self.max_rel_difference,
            "seconds": self.seconds,
            "executor": self.executor,
            "environment_differences": list(self.environment_differences),
            "checks": [vars(c) | {"differences": list(c.differences)} for c in self.checks],
        }


# ---- reconstructing what the planner saw --------------------------------------------------------


@dataclass
class _Journal:
    """The campaign's trials and journal, read once, to answer "what was true just before event E"."""

    trials: dict[int, TrialRecord]
    events: list[dict]
    versions: dict[int, list[dict[str, float]]]  # trial -> measured values of each (re)analysis, oldest first
    created_event: dict[int, int] = field(default_factory=dict)  # trial -> id of its creation event

    def __post_init__(self) -> None:
        for e in self.events:
            if e["kind"] == "state" and e["from_state"] is None and e["trial_id"] is not None:
                self.created_event.setdefault(e["trial_id"], e["id"])

    def proposed_conditions(self, trial_id: int) -> Conditions:
        """The conditions as the planner proposed them: the first operator edit keeps the original."""
        for e in self.events:
            if e["kind"] == "edit" and e["trial_id"] == trial_id:
                return dict(e["data"]["old"])
        return dict(self.trials[trial_id].conditions)

    def snapshot(self, before_event: int, trial_ids: Sequence[int]) -> list[TrialRecord]:
        """The given trials as they stood just before journal event `before_event`."""
        state: dict[int, str] = {}
        conditions: dict[int, Conditions] = {}
        analyses: dict[int, int] = {}
        for e in self.events:
            if e["id"] >= before_event:
                break
            tid = e["trial_id"]
            if tid is None:
                continue
            if e["kind"] in ("state", "reanalysis") and e["to_state"]:
                state[tid] = e["to_state"]
            if e["kind"] == "reanalysis":
                analyses[tid] = analyses.get(tid, 0) + 1
            if e["kind"] == "edit":
                conditions[tid] = dict(e["data"]["new"])
        out = []
        for tid in trial_ids:
            record = self.trials[tid]
            versions = self.versions.get(tid, [])
            k = analyses.get(tid, 0)
            values = versions[k] if k < len(versions) else {}
            out.append(
                replace(
                    record,
                    state=state.get(tid, record.state),
                    conditions=conditions.get(tid, self.proposed_conditions(tid)),
                    values=values,
                )
            )
        return out


def _measurement_versions(path: Path) -> dict[int, list[dict[str, float]]]:
    """Per trial, the values of each recorded (re)analysis in order, superseded ones included: the audit
    must see the values the planner saw, and a later reanalysis replaces what `trials()` returns."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        infos = conn.execute("SELECT trial_id, created_at FROM measurement_info ORDER BY id").fetchall()
        rows = conn.execute("SELECT trial_id, name, value, created_at FROM measurements ORDER BY id").fetchall()
    finally:
        conn.close()
    by_stamp: dict[tuple[int, float], dict[str, float]] = {}
    for trial_id, name, value, created_at in rows:
        by_stamp.setdefault((trial_id, created_at), {})[name] = value
    versions: dict[int, list[dict[str, float]]] = {}
    for trial_id, created_at in infos:
        versions.setdefault(trial_id, []).append(by_stamp.get((trial_id, created_at), {}))
    return versions


def planner_calls(campaign: Campaign) -> tuple[list[PlannerCall], list[ProposalCheck]]:
    """Every recorded planner call with its reconstructed inputs, and the trials that were not planned
    (retries, warm starts, manual entries) as skipped checks."""
    store = campaign.store
    settings = settings_from(campaign.protocol, campaign.seed)
    journal = _Journal({t.id: t for t in store.trials()}, store.events(), _measurement_versions(store.path))
    calls: list[PlannerCall] = []
    skipped: list[ProposalCheck] = []
    batch: list[tuple[int, Provenance]] = []

    def flush() -> None:
        if batch:
            calls.append(_reconstruct(journal, settings.problem, settings, campaign.seed, batch))
            batch.clear()

    for tid in sorted(journal.trials):
        record = store.proposal(tid)
        provenance = None if record is None else record.provenance
        if provenance is None or provenance.seed is None:
            flush()
            why = journal.trials[tid].origin + (f" of trial {journal.trials[tid].retry_of}" if journal.trials[tid].retry_of else "")
            skipped.append(ProposalCheck(tid, journal.trials[tid].proposer, "skipped", (why,)))
            continue
        key = (provenance.seed, provenance.data_hash, provenance.planner)
        if batch and key != (batch[0][1].seed, batch[0][1].data_hash, batch[0][1].planner):
            flush()
        batch.append((tid, provenance))
    flush()
    return calls, skipped


def _reconstruct(
    journal: _Journal, problem: Problem, settings: Any, campaign_seed: int, batch: list[tuple[int, Provenance]]
) -> PlannerCall:
    first, provenance = batch[0]
    trial_ids = tuple(tid for tid, _ in batch)
    recorded = tuple(journal.proposed_conditions(tid) for tid in trial_ids)
    assert provenance.seed is not None  # calls without a seed were skipped above
    seed = int(provenance.seed)
    existing = seed - campaign_seed * SEED_STRIDE  # how many trials the campaign had when it asked
    problems: list[str] = []
    if existing != first - 1:
        problems.append(
            f"recorded seed {seed} means the planner was asked with {existing} trials stored, "
            f"but trial {first} was the {first}th trial"
        )
        existing = first - 1
    snapshot = journal.snapshot(journal.created_event.get(first, 0), range(1, existing + 1))
    observations = history.observations(problem, snapshot)
    pending = history.pending(snapshot)
    sources = history.pending_fidelities(problem, snapshot)
    if journal.trials[first].origin == "manual":
        n = len(batch)  # `ask -n N`: the operator chose N
    else:
        room = settings.max_trials - history.n_results(snapshot) - len(pending)
        n = min(settings.batch_size, room)
    return PlannerCall(
        trial_ids,
        recorded,
        provenance.planner,
        seed,
        n,
        tuple(observations),
        tuple(pending),
        provenance.data_hash,
        data_hash(observations, pending, sources),
        frozenset(t.id for t in snapshot if t.state in (*history.RESULT_STATES, *history.IN_FLIGHT_STATES)),
        provenance.fallback,
        tuple(problems),
        provenance.planner_version,
        tuple(sources),
    )


# ---- re-deriving and comparing --------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    call: PlannerCall
    planner: tuple[str, dict[str, Any]]  # name and options: built where the job runs, by the code found there
    problem: Problem
    candidates: pd.DataFrame | None


def replay_call(job: _Job) -> list[ProposalCheck]:
    """Run one recorded planner call again and compare its proposals with the recorded ones."""
    call = job.call
    name, options = job.planner
    replayed = make_planner(name, **options).propose(
        job.problem, list(call.observations), list(call.pending), call.n, call.seed, job.candidates,
        list(call.pending_fidelities),
    )
    checks = []
    for i, tid in enumerate(call.trial_ids):
        if i >= len(replayed):
            checks.append(ProposalCheck(tid, call.planner, "mismatch", (f"replay proposed only {len(replayed)} point(s)",)))
            continue
        differences, worst = compare_conditions(call.recorded[i], replayed[i].conditions)
        fallback = replayed[i].provenance.fallback
        if differences and fallback and fallback != call.recorded_fallback:
            differences.append(f"the replayed planner fell back where the recorded one did not: {fallback}")
        checks.append(ProposalCheck(tid, call.planner, "mismatch" if differences else "match", tuple(differences), worst))
    return checks


def compare_conditions(recorded: Conditions, replayed: Conditions) -> tuple[list[str], float]:
    """Lines naming each parameter that differs (recorded vs replayed), and the largest relative float gap."""
    differences: list[str] = []
    worst = 0.0
    for name in sorted(set(recorded) | set(replayed)):
        a, b = recorded.get(name), replayed.get(name)
        if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
            gap = abs(a - b) / max(abs(a), abs(b), 1e-300)
            worst = max(worst, gap)
            if not math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=0.0):
                differences.append(f"{name}: recorded {a!r}, replayed {b!r} (relative difference {gap:.3g})")
        elif a != b or type(a) is not type(b):
            differences.append(f"{name}: recorded {a!r}, replayed {b!r}")
    return differences, worst


def audit(path: str | Path, executor: ExecutorSpec | None = None) -> AuditReport:
    """Re-derive every recorded proposal of the campaign at `path`; see the module docstring."""
    started = time.perf_counter()
    executor = executor or ExecutorSpec("process", workers=1)
    with Campaign.open(path) as campaign:
        calls, skipped = planner_calls(campaign)
        settings = settings_from(campaign.protocol, campaign.seed)
        main = planner_spec(campaign.protocol)
        recorded_versions = campaign.store.campaign()["versions"]
    fallback: tuple[str, dict[str, Any]] = ("sobol", {})  # the engine's fallback when the planner raised
    checks = list(skipped)
    jobs = []
    verified: frozenset[int] = frozenset()  # trials whose data a matching hash vouched for
    for call in calls:
        verdict = _input_problems(call, verified)
        if verdict:
            checks += [ProposalCheck(tid, call.planner, "data", tuple(verdict)) for tid in call.trial_ids]
            continue
        verified = call.input_ids
        name, options = main if call.planner == main[0] else fallback
        planner = (name, options_as_of(name, call.planner_version, options))
        jobs.append(_Job(call, planner, settings.problem, settings.candidates))
    for _, result in run_jobs(replay_call, jobs, executor):
        checks += result
    checks.sort(key=lambda c: c.trial_id)
    return AuditReport(str(path), checks, time.perf_counter() - started, executor.describe(),
                       environment_differences(recorded_versions, software_versions()))


NUMERICAL = ("cpu", "torch", "botorch", "gpytorch", "linear_operator", "numpy", "scipy")


def environment_differences(recorded: dict[str, str], current: dict[str, str]) -> tuple[str, ...]:
    """What of the processor and numerical libraries differs between a recording and this replay."""
    return tuple(
        f"{key} {recorded[key]} (now {current[key]})" if key in recorded else f"{key} not recorded (now {current[key]})"
        for key in NUMERICAL
        if recorded.get(key) != current.get(key)
    )


def _input_problems(call: PlannerCall, verified: frozenset[int]) -> list[str]:
    """Why this call's inputs cannot be trusted; `verified` are trials an earlier matching hash covered."""
    problems = list(call.problems)
    if call.recorded_hash != call.replayed_hash:
        suspects = sorted(call.input_ids - verified)
        where = f" (changed data among trial(s) {', '.join(map(str, suspects))})" if suspects else ""
        problems.append(
            f"the data the planner was given hashes to {call.replayed_hash[:12]}, but it recorded "
            f"{str(call.recorded_hash)[:12]}: trial conditions or measured values were changed after they were "
            f"used{where}, or the journal is incomplete"
        )
    return problems
