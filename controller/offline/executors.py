"""Where sweeps run: local worker processes by default, a dask cluster when one machine is not enough.

A sweep (bench runs, counterfactual replays over seeds, an audit's proposals) is a list of independent
jobs and one module-level function applied to each. `run_jobs` yields `(index, result)` pairs as jobs
finish; the results are the same whichever executor ran them, because every job is a pure function of
its arguments and every worker uses one torch thread (see `configure_worker`).

    >>> spec = ExecutorSpec("process", workers=2)
    >>> sorted(run_jobs(abs, [-1, 2, -3], spec))      # (index, result) as each job finishes
    [(0, 1), (1, 2), (2, 3)]

- "process": `concurrent.futures.ProcessPoolExecutor` (spawned workers); with `workers=1`, this process.
- "dask": `dask.distributed` (the `dask` extra). With `scheduler` ("tcp://host:8786") the jobs go to that
  existing cluster, whose workers must have closedloop installed; without it a `LocalCluster` of
  `workers` single-threaded worker processes is started and stopped around the sweep
  (`dask_processes=False`: one worker thread in this process, for tests).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TypeVar

EXECUTORS = ("process", "dask")

J = TypeVar("J")
R = TypeVar("R")


class ExecutorError(ValueError):
    """The executor cannot be used as asked (unknown name, dask not installed, scheduler unreachable)."""


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = "process"
    workers: int = os.cpu_count() or 1
    scheduler: str | None = None  # dask only: address of an existing scheduler
    dask_processes: bool = True  # dask LocalCluster only: worker processes (False: one thread here, for tests)

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ExecutorError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ExecutorError(f"workers must be a positive integer, got {self.workers!r}")
        if self.scheduler is not None and self.kind != "dask":
            raise ExecutorError("--dask-scheduler needs --executor dask")

    def describe(self) -> str:
        if self.kind == "process":
            return "this process" if self.workers == 1 else f"{self.workers} local worker processes"
        if self.scheduler:
            return f"the dask cluster at {self.scheduler}"
        return f"a local dask cluster of {self.workers} processes" if self.dask_processes else "dask in this process"


def configure_worker() -> None:
    """One torch thread per worker (small GPs gain nothing from more, and the arithmetic then matches a
    serial run); BoTorch's numerical warnings are recorded by the planner as fallbacks, not printed."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", module=r"(botorch|gpytorch|linear_operator)(\.|$)")


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    spec: ExecutorSpec | None = None,
    initializer: Callable[[], None] = configure_worker,
) -> Iterator[tuple[int, R]]:
    """Apply `fn` to every job; yield `(index in jobs, result)` as each finishes (any order).

    `fn`, the jobs and the results must pickle (module-level functions, plain data). A job that raises
    re-raises here, after the jobs still running are cancelled.
    """
    spec = spec or ExecutorSpec()
    if not jobs:
        return
    if spec.kind == "dask":
        yield from _run_dask(fn, jobs, spec, initializer)
    elif spec.workers == 1 or len(jobs) == 1:
        yield from _run_here(fn, jobs, initializer)
    else:
        yield from _run_processes(fn, jobs, spec.workers, initializer)


def _run_here(fn: Callable[[J], R], jobs: Sequence[J], initializer: Callable[[], None]) -> Iterator[tuple[int, R]]:
    import torch

    threads = torch.get_num_threads()
    initializer()
    try:
        for i, job in enumerate(jobs):
            yield i, fn(job)
    finally:
        torch.set_num_threads(threads)


def _run_processes(
    fn: Callable[[J], R], jobs: Sequence[J], workers: int, initializer: Callable[[], None]
) -> Iterator[tuple[int, R]]:
    # spawn, not fork: a forked child of a process that already ran torch can hang in OpenMP.
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=initializer) as ex:
        futures = {ex.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()


def _initialized_call(fn: Callable[[Any], Any], initializer: Callable[[], None], job: Any) -> Any:
    """A dask task: dask has no per-worker initializer hook as simple as the pool's, and ours is idempotent."""
    initializer()
    return fn(job)


def _run_dask(
    fn: Callable[[J], R], jobs: Sequence[J], spec: ExecutorSpec, initializer: Callable[[], None]
) -> Iterator[tuple[int, R]]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise ExecutorError(
            "--executor dask needs dask.distributed: pip install 'closedloop[dask]' (or use --executor process)"
        ) from None
    cluster = None
    try:
        if spec.scheduler:
            client = Client(spec.scheduler, timeout="10s")
        else:
            # In-process mode runs one job at a time: the planners seed torch's global generator, which
            # threads of one process would share.
            cluster = LocalCluster(
                n_workers=spec.workers if spec.dask_processes else 1,
                threads_per_worker=1,
                processes=spec.dask_processes,
                dashboard_address=None,
            )
            client = Client(cluster)
    except OSError as error:
        if cluster is not None:
            cluster.close()
        raise ExecutorError(f"cannot reach the dask scheduler {spec.scheduler}: {error}") from None
    try:
        # pure=False: equal jobs (e.g. a repeated seed) are still each run, as a list of jobs promises.
        futures = [client.submit(_initialized_call, fn, initializer, job, pure=False) for job in jobs]
        index = {future.key: i for i, future in enumerate(futures)}
        for future in dask_completed(futures):
            yield index[future.key], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
