"""Metrics of pool benchmarks (Liang et al. 2021): how fast a planner finds the best rows of a table.

A run is the order in which it revealed pool rows (trial 1 = the first row revealed, initial rows
included). Everything is compared with uniform random sampling without replacement, whose
expectations are exact (hypergeometric), so no random runs are needed for the baseline:
after i draws from N rows the expected fraction of a top set found is i / N, and the expected
draw that reveals the first of m marked rows is (N + 1) / (m + 1).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

TOP_FRACTION = 0.05  # the paper's "top 5 %" set: ceil(0.05 * N) best rows
TOP_K = 5  # also reported: trials to reveal any of the 5 best rows (near-degenerate bests)


def ranking(values: Sequence[float], maximize: bool) -> list[int]:
    """Row indices from best to worst; ties keep table order, so the top set is well defined."""
    array = np.asarray(values, dtype=float)
    return np.argsort(-array if maximize else array, kind="stable").tolist()


def top_rows(values: Sequence[float], maximize: bool, fraction: float = TOP_FRACTION) -> list[int]:
    """The ceil(fraction * N) best rows (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top fraction must be in (0, 1], got {fraction}")
    count = max(1, math.ceil(fraction * len(values) - 1e-9))
    return ranking(values, maximize)[:count]


def rows_within(values: Sequence[float], maximize: bool, tolerance: float) -> list[int]:
    """Rows whose value is within `tolerance` of the best one: any of them counts as "found the best"."""
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    array = np.asarray(values, dtype=float)
    if maximize:
        return np.flatnonzero(array >= array.max() - tolerance).tolist()
    return np.flatnonzero(array <= array.min() + tolerance).tolist()


def first_trial_in(order: Sequence[int], targets: Sequence[int]) -> int | None:
    """The 1-based trial that first revealed any of `targets`; None if the run never did."""
    wanted = set(targets)
    for trial, row in enumerate(order, start=1):
        if row in wanted:
            return trial
    return None


def found_fraction_curve(order: Sequence[int], targets: Sequence[int], budget: int) -> list[float]:
    """Fraction of `targets` revealed after trials 1..budget (a run shorter than the budget stays flat)."""
    wanted = set(targets)
    curve: list[float] = []
    found = 0
    for trial in range(budget):
        if trial < len(order) and order[trial] in wanted:
            found += 1
        curve.append(found / len(wanted))
    return curve


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Trial-by-trial mean over runs of equal length."""
    return np.mean(np.asarray(curves, dtype=float), axis=0).tolist() if curves else []


def random_fraction_curve(pool_size: int, budget: int) -> list[float]:
    """Expected fraction of any top set that random sampling without replacement has found after i trials."""
    return [min(i, pool_size) / pool_size for i in range(1, budget + 1)]


def random_expected_first(pool_size: int, marked: int) -> float:
    """Expected trial at which random sampling without replacement first reveals one of `marked` rows."""
    return (pool_size + 1) / (marked + 1)


def random_median_first(pool_size: int, marked: int) -> int:
    """Median trial at which random sampling without replacement first reveals one of `marked` rows:
    the first t with P(no marked row in t draws) = C(N - m, t) / C(N, t) <= 1/2."""
    none_yet = 1.0
    for t in range(1, pool_size - marked + 2):
        none_yet *= (pool_size - marked - (t - 1)) / (pool_size - (t - 1))
        if none_yet <= 0.5 + 1e-12:  # float products of exact halves land a hair above
            return t
    return pool_size - marked + 1


def trials_to_reach(curve: Sequence[float], fraction: float) -> int | None:
    """The first 1-based trial at which `curve` reaches `fraction`; None if it never does."""
    for trial, value in enumerate(curve, start=1):
        if value >= fraction - 1e-12:
            return trial
    return None


def random_trials_to_reach(pool_size: int, fraction: float) -> int:
    """The first trial at which random sampling's expected found fraction (i / N) reaches `fraction`."""
    return max(1, math.ceil(fraction * pool_size - 1e-9))


def enhancement_curve(curve: Sequence[float], pool_size: int) -> list[float]:
    """EF(i) = planner's found fraction / random's expected found fraction, trial by trial."""
    return [f / r for f, r in zip(curve, random_fraction_curve(pool_size, len(curve)), strict=True)]


def acceleration_factor(curve: Sequence[float], pool_size: int, fraction: float) -> float | None:
    """AF = trials random sampling needs to reach `fraction` / trials the planner needs; None if the
    planner's curve does not reach it within its budget."""
    needed = trials_to_reach(curve, fraction)
    return None if needed is None else random_trials_to_reach(pool_size, fraction) / needed


def acceleration_curve(curve: Sequence[float], pool_size: int, top_count: int) -> list[dict[str, float | None]]:
    """AF at each attainable fraction k / top_count (k = 1..top_count)."""
    out: list[dict[str, float | None]] = []
    for k in range(1, top_count + 1):
        fraction = k / top_count
        out.append(
            {
                "fraction": fraction,
                "trials": trials_to_reach(curve, fraction),
                "random_trials": random_trials_to_reach(pool_size, fraction),
                "acceleration_factor": acceleration_factor(curve, pool_size, fraction),
            }
        )
    return out


def censored_median(trials: Sequence[float | None]) -> float | None:
    """Median of per-run trial counts where None means "not within the budget" (counted as later than
    any finite value); None when at least half the runs did not get there, so the median is unknown."""
    if not trials:
        return None
    finite = sorted(t for t in trials if t is not None)
    order: list[float] = finite + [math.inf] * (len(trials) - len(finite))
    median = statistics.median(order)
    return None if math.isinf(median) or math.isnan(median) else float(median)


def enhancement_at(curve: Sequence[float], pool_size: int, fraction: float) -> float | None:
    """EF at the trial where the planner's curve first reaches `fraction`; None if it never does."""
    needed = trials_to_reach(curve, fraction)
    return None if needed is None else curve[needed - 1] / (needed / pool_size)


def summarize_pool(values: Sequence[float], maximize: bool, tolerance: float, budget: int) -> dict[str, Any]:
    """The pool's targets (best value, rows that count as best, top-5 % size) and random's expectations."""
    size = len(values)
    best_rows = rows_within(values, maximize, tolerance)
    top = top_rows(values, maximize)
    ranked = ranking(values, maximize)
    return {
        "dataset": {
            "best_value": float(values[ranked[0]]),
            "best_row": ranked[0],
            "rows_counting_as_best": len(best_rows),
            "top_count": len(top),
            "top_threshold": float(values[top[-1]]),
        },
        "random": {
            "method": "analytic: uniform sampling without replacement (hypergeometric expectations)",
            "expected_trials_to_best": random_expected_first(size, len(best_rows)),
            "median_trials_to_best": random_median_first(size, len(best_rows)),
            f"expected_trials_to_top{TOP_K}": random_expected_first(size, min(TOP_K, size)),
            f"median_trials_to_top{TOP_K}": random_median_first(size, min(TOP_K, size)),
            "trials_to_half_of_top": random_trials_to_reach(size, 0.5),
            "top_fraction_curve": random_fraction_curve(size, budget),
        },
    }


def summarize_runs(
    values: Sequence[float], maximize: bool, tolerance: float, budget: int, orders: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """One planner's metrics over its runs (one revealed-row order per seed)."""
    size = len(values)
    best_rows = rows_within(values, maximize, tolerance)
    top = top_rows(values, maximize)
    top_k = ranking(values, maximize)[:TOP_K]
    to_best = [first_trial_in(order, best_rows) for order in orders]
    to_top_k = [first_trial_in(order, top_k) for order in orders]
    curves = [found_fraction_curve(order, top, budget) for order in orders]
    curve = mean_curve(curves)
    to_half = [trials_to_reach(c, 0.5) for c in curves]
    return {
        "trials_to_best": to_best,
        "median_trials_to_best": censored_median(to_best),
        "found_best": sum(t is not None for t in to_best),
        f"trials_to_top{TOP_K}": to_top_k,
        f"median_trials_to_top{TOP_K}": censored_median(to_top_k),
        "trials_to_half_of_top": to_half,
        "median_trials_to_half_of_top": censored_median(to_half),
        "top_fraction_curve": curve,
        "top_fraction_at_budget": curve[-1] if curve else None,
        "trials_to_half_of_top_mean_curve": trials_to_reach(curve, 0.5),
        "enhancement_factor_at_half": enhancement_at(curve, size, 0.5),
        "acceleration_factor_at_half": acceleration_factor(curve, size, 0.5),
        "enhancement_factor_curve": enhancement_curve(curve, size),
        "acceleration_factor_curve": acceleration_curve(curve, size, len(top)),
    }
