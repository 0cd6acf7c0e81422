"""Per problem: each tool's per-seed score, mean, median, standard error, CPU per proposal, and paired
win counts of closedloop against each peer; written as JSON and as one markdown table over problems."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.peers.harness import regret_curve, trials_to
from benchmarks.peers.problems import BenchProblem

OURS = "closedloop"
PEERS = ("ax", "baybe", "botorch")


def score(problem: BenchProblem, run: dict[str, Any], tolerance: float) -> float:
    """Lower is better: final regret, or trials to the target (evaluations + 1 when never reached)."""
    if run["error"]:
        return math.inf
    if problem.metric == "regret":
        return regret_curve(problem, run)[-1]
    reached = trials_to(problem, run, tolerance)
    return float(problem.evaluations + 1 if reached is None else reached)


def summarize(problem: BenchProblem, runs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    tools: dict[str, Any] = {}
    for name in sorted({r["tool"] for r in runs}, key=_tool_order):
        mine = sorted((r for r in runs if r["tool"] == name), key=lambda r: r["seed"])
        scores = [score(problem, r, tolerance) for r in mine]
        finite = [s for s in scores if math.isfinite(s)]
        cpu = [c for r in mine for c in r["ask_cpu_s"]]
        entry: dict[str, Any] = {
            "seeds": [r["seed"] for r in mine],
            "score_by_seed": [_round(s) for s in scores],
            "median": _round(statistics.median(scores)) if scores else None,
            "mean": _round(statistics.fmean(finite)) if finite else None,
            "standard_error": _round(statistics.stdev(finite) / math.sqrt(len(finite))) if len(finite) > 1 else None,
            "cpu_s_per_proposal_median": _round(statistics.median(cpu)) if cpu else None,
            "cpu_s_per_proposal_mean": _round(statistics.fmean(cpu)) if cpu else None,
            "errors": [r["error"].splitlines()[0] for r in mine if r["error"]],
            "outside_the_space": sum(r["outside"] for r in mine),
        }
        if problem.metric == "regret":
            at = min(20, problem.evaluations)
            at_k = [c[at - 1] if len(c) >= at else math.inf for c in (regret_curve(problem, r) for r in mine)]
            entry[f"median_regret_at_{at}"] = _round(statistics.median(at_k))
        else:
            entry["reached"] = sum(s <= problem.evaluations for s in scores)
        if problem.failure_probability is not None or problem.name.startswith("mbe"):
            entry["failed_samples"] = sum(v is None for r in mine for v in r["measured"])
        tools[name] = entry
    return {"tools": tools, "paired": _paired(tools), "verdict": _verdict(tools)}


def _paired(tools: dict[str, Any]) -> dict[str, dict[str, int]]:
    """closedloop against each tool, seed by seed (only seeds both ran): wins, ties, losses."""
    if OURS not in tools:
        return {}
    ours = dict(zip(tools[OURS]["seeds"], map(_inf, tools[OURS]["score_by_seed"]), strict=True))
    out = {}
    for name, entry in tools.items():
        if name == OURS:
            continue
        theirs = dict(zip(entry["seeds"], map(_inf, entry["score_by_seed"]), strict=True))
        common = sorted(set(ours) & set(theirs))
        wins = sum(ours[s] < theirs[s] - _tie(ours[s], theirs[s]) for s in common)
        losses = sum(theirs[s] < ours[s] - _tie(ours[s], theirs[s]) for s in common)
        out[name] = {"wins": wins, "ties": len(common) - wins - losses, "losses": losses}
    return out


def _inf(score: float | None) -> float:
    return math.inf if score is None else score  # a run that failed or never reached: the worst score


def _tie(a: float, b: float) -> float:
    return 1e-6 * max(1.0, abs(a), abs(b)) if math.isfinite(a) and math.isfinite(b) else 0.0


def _verdict(tools: dict[str, Any]) -> dict[str, Any]:
    peers = {n: _inf(t["median"]) for n, t in tools.items() if n in PEERS}
    if OURS not in tools or not peers:
        return {}
    best = min(peers, key=lambda n: peers[n])
    ours = _inf(tools[OURS]["median"])
    return {
        "best_peer": best,
        "best_peer_median": _round(peers[best]),
        "closedloop_median": _round(ours),
        "no_worse_than_best_peer": ours <= peers[best] + _tie(ours, peers[best]),
        "better_than_best_peer": ours < peers[best] - _tie(ours, peers[best]),
    }


def _tool_order(name: str) -> tuple[int, str]:
    order = [OURS, *PEERS, "random"]
    return (order.index(name) if name in order else len(order), name)


def _round(x: float) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.4g}")


def markdown(results: list[dict[str, Any]]) -> str:
    """One table over problems: median (mean +- se) per tool, closedloop's paired wins, CPU per proposal.
    Variants of closedloop (`closedloop:<label>`, options tried) stay in the JSON, not in the table."""
    names = [n for n in (OURS, *PEERS, "random") if any(n in r["summary"]["tools"] for r in results)]
    lines = [
        "| problem | score (lower is better) | " + " | ".join(names) + " | closedloop wins/ties/losses vs "
        + ", ".join(n for n in names if n != OURS) + " | CPU s per proposal (median): " + ", ".join(names) + " |",
        "|" + "---|" * (3 + len(names) + 1),
    ]
    for result in results:
        tools = result["summary"]["tools"]
        cells = []
        for name in names:
            t = tools.get(name)
            if t is None:
                cells.append("-")
                continue
            seeds = len(t["seeds"])
            text = f"{_fmt(t['median'])} ({_fmt(t['mean'])} ± {_fmt(t['standard_error'])}, n={seeds})"
            if t["errors"]:
                text += f" {len(t['errors'])} errors"
            cells.append(f"**{text}**" if name == result["summary"]["verdict"].get("best_peer") else text)
        paired = result["summary"]["paired"]
        wins = ", ".join(f"{paired[n]['wins']}/{paired[n]['ties']}/{paired[n]['losses']}" if n in paired else "-"
                         for n in names if n != OURS)
        cpu = ", ".join(_fmt(tools[n]["cpu_s_per_proposal_median"]) if n in tools else "-" for n in names)
        lines.append(f"| {result['problem']} | {result['score']} | " + " | ".join(cells) + f" | {wins} | {cpu} |")
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
