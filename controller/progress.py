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

from planners.space import Problem


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class ProgressReporter:
    """Receives the engine's progress hook calls and shows trial n of N, state, best so far, ETA."""

    def __init__(self, problem: Problem, total: int, done: int = 0, *, quiet: bool = False, stream: TextIO | None = None):
        self.problem = problem
        self.total = total
        self.done = done
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.best: float | None = None
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
            self._task = self._progress.add_task("campaign", total=self.total, completed=self.done, state="", best="-")
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

    def _line(self, kind: str, info: dict[str, Any]) -> str:
        trial = info.get("trial")
        head = f"[{self.done}/{self.total}]"
        if kind == "measured":
            values = " ".join(f"{k}={_fmt(v)}" for k, v in info["values"].items()) or info.get("status", "")
            best = _fmt(self.best) if self.best is not None else "-"
            return f"{head} trial {trial} {info.get('status')}: {values} (best {self.first.name} {best})"
        if kind == "running":
            cond = " ".join(f"{k}={_fmt(v)}" for k, v in info["conditions"].items())
            return f"{head} trial {trial} running on {info['station']}: {cond}"
        if kind in ("refused", "fault"):
            return f"{head} trial {trial} {kind}: {info.get('reason') or info.get('detail')}"
        if kind in ("stopped", "paused"):
            return f"{kind}: {info.get('reason')}"
        return f"{head} trial {trial} {kind}"
