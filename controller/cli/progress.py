"""Live progress of a running campaign: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from closedloop.planners.space import Problem


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressReporter:
    """Receives the engine's progress hook calls and shows trial n of N, state, best so far, ETA.

    `best` is the best value of the first objective already stored (a resumed campaign); the ETA is
    the wall time this session has taken per result, times the results still to come.
    """

    def __init__(self, problem: Problem, total: int, done: int = 0, *, quiet: bool = False,
                 stream: TextIO | None = None, best: float | None = None):
        self.problem = problem
        self.total = total
        self.done = done
        self.done_at_start = done
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.best: float | None = best
        self.first = problem.objectives[0]
        self.start = time.monotonic()
        self.live = not quiet and self.stream.isatty()
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]trial"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[state]}"),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._progress.start()
            best = _fmt(self.best) if self.best is not None else "-"
            self._task = self._progress.add_task("campaign", total=self.total, completed=self.done, state="", best=best)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "measured":
            self.done += 1
            v = info["values"].get(self.first.name)
            if v is not None and (
                self.best is None or (v > self.best if self.first.maximize else v < self.best)
            ):
                self.best = v
        if kind == "proposed":
            return  # "running" follows at once and says more
        line = self._line(kind, info)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, state=f"{kind} #{info.get('trial', '')}",
                                  best=_fmt(self.best) if self.best is not None else "-")
            if kind in ("refused", "fault"):
                self._progress.console.print(line)
        elif kind in ("stopped", "paused"):
            return  # the command itself reports how the campaign ended
        elif not self.quiet or kind in ("refused", "fault"):
            print(line, file=self.stream, flush=True)

    def eta(self) -> str:
        """'ETA h:mm:ss' from this session's wall time per result; unknown before the first result."""
        finished = self.done - self.done_at_start
        if self.done >= self.total:
            return "ETA 0:00:00"
        if finished <= 0:
            return "ETA unknown"
        per_result = (time.monotonic() - self.start) / finished
        return f"ETA {_duration(per_result * (self.total - self.done))}"

    def _line(self, kind: str, info: dict[str, Any]) -> str:
        trial = info.get("trial")
        head = f"[{self.done}/{self.total}]"
        if kind == "measured":
            values = " ".join(f"{k}={_fmt(v)}" for k, v in info["values"].items()) or info.get("status", "")
            best = _fmt(self.best) if self.best is not None else "-"
            return f"{head} trial {trial} {info.get('status')}: {values} (best {self.first.name} {best}; {self.eta()})"
        if kind == "running":
            cond = " ".join(f"{k}={_fmt(v)}" for k, v in info["conditions"].items())
            return f"{head} trial {trial} running on {info['station']}: {cond}"
        if kind in ("refused", "fault"):
            return f"{head} trial {trial} {kind}: {info.get('reason') or info.get('detail')}"
        if kind in ("stopped", "paused"):
            return f"{kind}: {info.get('reason')}"
        return f"{head} trial {trial} {kind}"
