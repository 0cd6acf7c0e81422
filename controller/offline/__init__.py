"""Offline work on recorded campaigns and data: the audit (re-derive every proposal), counterfactual
replays with another planner, pool and campaign benchmarks, reanalysis of raw data, and the executors
(local processes or dask) that run their sweeps."""

from closedloop.controller.offline.audit import AuditReport, audit
from closedloop.controller.offline.counterfactual import CounterfactualSpec, sweep
from closedloop.controller.offline.executors import ExecutorSpec
from closedloop.controller.offline.pool_bench import BenchSettings, run_benchmark
from closedloop.controller.offline.reanalyze import reanalyze_campaign

__all__ = [
    "AuditReport",
    "BenchSettings",
    "CounterfactualSpec",
    "ExecutorSpec",
    "audit",
    "reanalyze_campaign",
    "run_benchmark",
    "sweep",
]
