"""Moving samples through the steps of a line: which sample a free station takes, when a new sample may
start, what a finished step leads to, and where a sample caught by a crash goes on (see line.py for
the queues and protocol/workflow.py for the steps).
"""

from __future__ import annotations

import math

from closedloop.controller.engine import history
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.events import (
    DriverFailed,
    ErrorInfo,
    StepEvent,
)
from closedloop.controller.engine.line import predicted_wait
from closedloop.controller.engine.state import (
    REFUSALS_BEFORE_STOP,
    EngineState,
    reraise_interrupt,
)
from closedloop.controller.protocol.workflow import Step
from closedloop.drivers.base import InstrumentContext, Measurement, Recoverable


class LineFlow(EngineState):
    """The engine's part that moves samples through a workflow's steps."""

    def _back_in_line(self, trial_id: int) -> bool:
        """After a crash, a sample of a line goes on from the step it was in, with what its finished steps
        measured: waiting for the next step, or running an interrupted step again where the protocol says
        it can be repeated (journaled). False when it cannot go on (a step that cannot be repeated: the
        sample is lost, journaled; or no step had started): the caller abandons it."""
        events = [e for e in self.store.events(trial_id=trial_id, kinds=["step"]) if isinstance(e["data"], dict)]
        if not events:
            return False
        for e in events:
            if e["data"].get("phase") == "done":
                self.line.step_done(trial_id, Measurement(values=dict(e["data"].get("values") or {}),
                                                          units=dict(e["data"].get("units") or {}),
                                                          duration_s=float(e["data"].get("duration_s") or 0.0)))
        last = events[-1]
        index, phase = int(last["data"].get("index", 0)), last["data"].get("phase")
        now = self.clock.now()
        since = now if self.clock.virtual else min(now, float(last["t"]))
        after = self.line.next_index(index, self._route(trial_id))
        if phase == "done" and after is not None:
            self.line.arrive(trial_id, after, since)
            return True
        step = self.settings.line[index]
        if phase == "started" and self._recovered_step(trial_id, str(last["data"].get("station")), now):
            return True
        if phase in ("started", "repeat") and step.repeatable:
            self.log.emit(StepEvent(trial_id, step.name, index, None, "repeat",
                                    "the controller stopped during this step; it runs again"))
            self.line.arrive(trial_id, index, now, first=True)
            return True
        if phase in ("started", "repeat"):
            self.log.emit(StepEvent(trial_id, step.name, index, None, "lost",
                                    f"the controller stopped during {step.name}, which cannot be repeated (on_crash: lost)"))
        self.line.drop(trial_id)
        return False

    def _recovered_step(self, trial_id: int, station_name: str, now: float) -> bool:
        """The interrupted step's result read back from its instrument, where its driver can: then the
        sample goes on as if the step had just ended."""
        station = next((s for s in self.stations if s.name == station_name), None)
        if station is None or not isinstance(station.driver, Recoverable):
            return False
        try:
            recovered = station.driver.recover(trial_id, InstrumentContext(clock=self.clock, trial_id=trial_id))
        except BaseException as exc:  # noqa: BLE001 - a driver bug: the step is repeated or the sample lost
            reraise_interrupt(exc)
            self.log.emit(DriverFailed(station.name, f"recover trial {trial_id}", ErrorInfo.of(exc, with_traceback=True)))
            return False
        if recovered is None:
            # Left mid-step by a controller that died: safe before the step runs again or the sample is lost.
            self._make_safe(station, f"the controller stopped during trial {trial_id}'s step; its state is unknown",
                            journal=True)
            return False
        self._step_finished(trial_id, station, recovered, now)
        return True

    def _room_for_a_new_sample(self) -> bool:
        """A line starts a new sample only when it would not wait longer than the next step's max_wait for
        a free station (by the steps' durations so far; a station taken for a time not yet known is
        taken); without a max_wait, unless samples already queue for the next step. Coating films that
        expire waiting for a hot plate would waste them; the bottleneck is kept busy all the same, since
        a sample is started early enough to be ready when a station frees."""
        if self.settings.max_in_line is not None and len(self.busy) + self.line.waiting() >= self.settings.max_in_line:
            return False
        if len(self.settings.line) < 2:
            return True
        limit = self.settings.line[1].max_wait_s
        if limit is None:  # no deadline: start unless samples already queue for the next step's stations
            return len(self.line.waiting_for(1)) < sum(s.step == 1 for s in self.stations)
        # Bounds from what the steps have taken so far: the first step's shortest run (the sample is ready
        # at the earliest) and the next step's longest (its stations free at the latest), so that a
        # prediction errs towards an idle minute on the first step rather than a film wasted waiting.
        now, first, nxt = self.clock.now(), self.line.shortest(0) or 0.0, self.line.longest(1)
        free_at = [now if s.name not in self.busy else self._busy_since[s.name] + nxt if nxt is not None else math.inf
                   for s in self.stations if s.step == 1]
        ahead = [now for _ in self.line.waiting_for(1)]
        ahead += [self._busy_since[s.name] + first for s in self.stations if s.step == 0 and s.name in self.busy]
        return predicted_wait(now + first, free_at or [now], ahead, nxt) <= limit

    def _start_sample_live(self, station: Station) -> None:
        """A live line's first step: take a proposal the planning thread has ready, and ask for the next one
        at once, so that it is ready when this station frees."""
        assert self._planning is not None
        self._take_plan()
        if self.ready:
            self._dispatch(self.ready.popleft(), station)
        if not self.ready:
            self._plan_next()

    def _plan_next(self) -> None:
        assert self._planning is not None
        if self._planning.busy or self._refusals >= REFUSALS_BEFORE_STOP:
            return
        request, _, passed = self._plan_request(self.settings.batch_size)
        for trial_id in passed:
            self.approve(trial_id)
        if request is not None:
            self._planning.start(request, self._planner_call)

    def _take_plan(self, timeout: float | None = 0.0) -> None:
        assert self._planning is not None
        outcome = self._planning.take(timeout)
        if outcome is None:
            return
        proposals = (list(outcome.proposals) if outcome.error is None
                     else self._fall_back(outcome.request, outcome.error))
        for trial_id in self._store_proposals(proposals, outcome.request.origin):
            self.approve(trial_id)

    def _next_step(self, station: Station) -> None:
        """A free station of a later step takes the sample that has waited longest, unless it waited past
        the step's max_wait: such a sample is recorded as failed, and the next one is taken."""
        step = self.settings.line[station.step]
        while (waiting := self.line.next_for(station.step)) is not None:
            waited = self.clock.now() - waiting.since
            if step.max_wait_s is not None and waited > step.max_wait_s:
                self._expired(waiting.trial_id, step, waited)
                continue
            self._dispatch(waiting.trial_id, station)
            return

    def _expired(self, trial_id: int, step: Step, waited: float) -> None:
        reason = (f"waited {waited / 60:.1f} min for {step.name}, longer than its max_wait of "
                  f"{(step.max_wait_s or 0) / 60:g} min")
        with self.store.batch():
            self.log.emit(StepEvent(trial_id, step.name, step.index, None, "expired", reason,
                                    {"waited_s": waited, "max_wait_s": step.max_wait_s}))
            self.ingest(trial_id, self.line.result(trial_id, Measurement(
                status="failed_sample", detail=reason, analysis=history.EXPIRED, instrument=step.name), step))

    def _step_finished(self, trial_id: int, station: Station, m: Measurement, at: float) -> None:
        """A sample's step ended with a result: on to the next step, or the trial's result after the last
        (a failed sample ends its way at the step it failed in)."""
        step = self.settings.line[station.step]
        self.line.took(station.step, m.duration_s)
        failed = m.status != "ok"
        data = {"reason": m.detail} if failed else {"values": dict(m.values), "units": dict(m.units),
                                                     "duration_s": m.duration_s}
        after = self.line.next_index(station.step, self._route(trial_id))
        if failed or after is None:
            with self.store.batch():
                self.log.emit(StepEvent(trial_id, step.name, step.index, station.name,
                                        "failed" if failed else "done", m.detail if failed else "", data))
                self.ingest(trial_id, self.line.result(trial_id, m, step), station=station)
            return
        self.log.emit(StepEvent(trial_id, step.name, step.index, station.name, "done", "", data))
        self.line.step_done(trial_id, m)
        self.line.arrive(trial_id, after, at)

    def _route(self, trial_id: int) -> tuple[int, ...] | None:
        """The steps of the trial's fidelity (a film skips the device steps); None without fidelities. A
        trial with no fidelity of its own (proposed by a planner that does not choose) takes the target's."""
        routes = self.settings.routes
        if not routes:
            return None
        return routes.get(history.source_of(self.settings.problem, self.store.trial(trial_id).fidelity).name)
