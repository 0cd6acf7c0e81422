"""Live progress of a running campaign: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
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

from closedloop.controller.engine.events import (
    Abandonment,
    EngineEvent,
    OperatorHeld,
    ProposalRefused,
    TrialAbandoned,
    TrialMeasured,
    TrialStarted,
)
from closedloop.planners.space import Problem

# How a trial that ended without a result reads in its progress line: an operator's stop or absence and a
# crash are no instrument fault, and a line saying "fault" sends a lab engineer to check the instrument.
ABANDONED_AS = {
    Abandonment.OPERATOR_ABORT: "stopped",
    Abandonment.INTERRUPTED: "interrupted",
    Abandonment.DRIVER_REFUSED: "refused",
    Abandonment.GATE_AT_DISPATCH: "refused",
}


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
                 stream: TextIO | None = None, best: float | None = None, prompts: bool = False,
                 units: Mapping[str, str] | None = None):
        self.problem = problem
        self.total = total
        self.done = done
        self.done_at_start = done
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.best: float | None = best
        self.first = problem.objectives[0]
        self.start = time.monotonic()
        # `prompts`: the operator answers questions at this terminal; a live bar would redraw over them.
        self.live = not quiet and not prompts and self.stream.isatty()
        self._progress: Progress | None = None
        self._task: Any = None
        self._units = dict(units or {})  # parameter -> unit, to show conditions as a person reads them
        self._conditions: dict[int, str] = {}  # a running trial's conditions, shown again with its result

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]trial"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[state]}"),
                TextColumn("best {task.fields[best]}"),
                TextColumn("elapsed"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
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

    def __call__(self, event: EngineEvent) -> None:
        """One engine event: a trial started, measured, refused or ended without a result."""
        match event:
            case TrialMeasured(trial, m):
                self.done += 1
                v = m.values.get(self.first.name)
                if v is not None and (self.best is None or (v > self.best if self.first.maximize else v < self.best)):
                    self.best = v
                values = "  ".join(f"{k}={_fmt(v)}{_unit(m.units.get(k))}" for k, v in m.values.items())
                cond = self._conditions.pop(trial, "")
                self._show("measured", trial, f"trial {trial} {m.status}: {values or m.detail or m.status}"
                           f"{'  at ' + cond if cond else ''}  (best {self.first.name} {_best(self.best)}; {self.eta()})",
                           alert=False, keep=True)
            case TrialStarted(trial, station, conditions):
                cond = "  ".join(f"{k}={_fmt(v)}{_unit(self._units.get(k))}" for k, v in conditions.items())
                self._conditions[trial] = cond
                self._show("running", trial, f"trial {trial} running on {station}: {cond}", alert=False)
            case ProposalRefused(trial, _, error):
                self._show("refused", trial, f"trial {trial} refused: {error.message}", alert=True)
            case TrialAbandoned(trial, cause, detail):
                state = ABANDONED_AS.get(cause, "fault")
                self._show(state, trial, f"trial {trial} {state}: {detail}", alert=True)
            case OperatorHeld(by, resumed):  # from the dashboard: whoever watches this terminal must know why
                self._show("running" if resumed else "paused", None,
                           f"resumed by {by}" if resumed else f"paused by {by}: no new trial starts until resumed",
                           alert=True)

    def _show(self, state: str, trial: int | None, text: str, *, alert: bool, keep: bool = False) -> None:
        """A line for the log (only faults and refusals with --quiet). On a terminal the live bar shows
        the state, and results (`keep`) and alerts stay above it as lines."""
        line = f"[{self.done}/{self.total}] {text}"
        if self._progress is not None:
            where = "" if trial is None else f" #{trial}"
            self._progress.update(self._task, completed=self.done, state=f"{state}{where}", best=_best(self.best))
            if alert or keep:
                self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        elif not self.quiet or alert:
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


def _unit(unit: str | None) -> str:
    return f" {unit}" if unit else ""


def _best(value: float | None) -> str:
    return _fmt(value) if value is not None else "-"
