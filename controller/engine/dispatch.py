"""Running trials on stations: in virtual time one after another on per-station clocks, or live in
one thread per station. Both hand the engine `Completion`s in the order the instrument finished them."""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from closedloop.controller.engine.clock import OperatorAbort, StationClock, VirtualClock, WallClock
from closedloop.drivers.base import (
    Abortable,
    Clock,
    Driver,
    InstrumentContext,
    Measurement,
    Value,
)


@dataclass
class Station:
    """One place a trial can run: a driver and the name it is journaled under. `virtual`: the instrument
    lives in this process (an emulator or a simulator) and takes the trial's clock, so the campaign runs
    in virtual time."""

    name: str
    driver: Driver
    virtual: bool = False
    last_setpoints: dict[str, Value] = field(default_factory=dict)
    step: int = 0  # the step of the line it serves (0 for a protocol of one instrument)


@dataclass
class Job:
    trial_id: int
    station: Station
    conditions: Mapping[str, Value]  # in the instrument's units


@dataclass
class Completion:
    job: Job
    measurement: Measurement | None
    error: BaseException | None  # whatever the driver raised: a fault, a refusal, or a bug
    started_at: float
    finished_at: float


# journal(trial_id, station_name, direction, text, t)
Journal = Callable[[int, str, str, str, float], None]
T = TypeVar("T")


@dataclass(frozen=True)
class OperatorChannel:
    """What a driver may ask of the operator during a trial, by trial id: `confirm(trial_id, message)` a
    manual step, `ask(trial_id, question)` -> the answer (`InstrumentContext.confirm` and `.ask`)."""

    confirm: Callable[[int, str], None]
    ask: Callable[[int, str], str]


def _run(
    job: Job, clock: Clock, journal: Journal, operator: OperatorChannel, *, main_thread: bool
) -> tuple[Measurement | None, BaseException | None]:
    """Run one trial on its driver. Whatever the driver raises or returns instead of a `Measurement` comes
    back as the trial's error: a worker that ended silently would leave a live campaign waiting on a hot
    instrument. Only a real Ctrl-C (KeyboardInterrupt on the main thread, in virtual time) passes through,
    to pause the campaign; in a worker thread a KeyboardInterrupt or SystemExit can only come from the
    driver itself, and is its fault like any other."""
    ctx = InstrumentContext(
        clock=clock,
        trial_id=job.trial_id,
        journal=lambda d, text: journal(job.trial_id, job.station.name, d, text, clock.now()),
        confirm=lambda message: operator.confirm(job.trial_id, message),
        ask=lambda question: operator.ask(job.trial_id, question),
    )
    try:
        result = job.station.driver.run(job.conditions, ctx)
    except KeyboardInterrupt:
        if main_thread:
            raise
        return None, RuntimeError("the driver raised KeyboardInterrupt")
    except BaseException as exc:  # noqa: BLE001 - the boundary to drivers: any failure is this trial's fault
        return None, exc
    if not isinstance(result, Measurement):
        return None, TypeError(f"the driver returned {type(result).__name__}, not a Measurement")
    return result, None


class VirtualDispatcher:
    """Simulation: a trial runs to completion when submitted, on its station's own clock; its result is
    released to the engine only when the campaign clock reaches the trial's finish time."""

    def __init__(self, clock: VirtualClock, journal: Journal, operator: OperatorChannel) -> None:
        self.clock = clock
        self.journal = journal
        self.operator = operator
        self._heap: list[tuple[float, int, Completion]] = []
        self._order = itertools.count()

    def submit(self, job: Job) -> None:
        station_clock = StationClock(self.clock.now())
        measurement, error = _run(job, station_clock, self.journal, self.operator, main_thread=True)
        done = Completion(job, measurement, error, station_clock.start, station_clock.now())
        heapq.heappush(self._heap, (done.finished_at, next(self._order), done))

    @property
    def in_flight(self) -> int:
        return len(self._heap)

    def next_completion(self, timeout: float | None = None) -> Completion:
        """The earliest finished trial (every virtual trial has finished: `timeout` never applies)."""
        _, _, done = heapq.heappop(self._heap)
        self.clock.advance_to(done.finished_at)
        return done

    def abort_running(self) -> list[tuple[Station, BaseException]]:
        """Nothing to stop: a virtual trial has already run to its end when it was submitted."""
        return []

    def abandon_all(self) -> list[Job]:
        """Results not yet released are lost, as they would be if the controller died mid-measurement."""
        jobs = [c.job for _, _, c in self._heap]
        self._heap.clear()
        return jobs


class _OperatorCall:
    """A driver's call to the operator, made from a trial's worker thread and carried out on the engine's
    thread: that thread owns the terminal and receives Ctrl-C, and the operator is asked one thing at a
    time even when several stations run."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class ThreadedDispatcher:
    """Live: one worker thread per running trial; the engine thread waits on a queue of completions, and
    carries out the drivers' calls to the operator that arrive on the same queue."""

    def __init__(self, clock: WallClock, journal: Journal, operator: OperatorChannel) -> None:
        self.clock = clock
        self.journal = journal
        self.operator = OperatorChannel(
            confirm=lambda trial_id, message: self._on_engine_thread(lambda: operator.confirm(trial_id, message)),
            ask=lambda trial_id, question: self._on_engine_thread(lambda: operator.ask(trial_id, question)),
        )
        self._done: queue.Queue[Completion | _OperatorCall] = queue.Queue()
        self._running: dict[int, tuple[threading.Thread, Job]] = {}

    def _on_engine_thread(self, call: Callable[[], T]) -> T:
        """From a worker: `call` carried out by the engine thread (in `next_completion`); its result, or
        what it raised. Raises `OperatorAbort` once the trials are aborted, answered or not."""
        request = _OperatorCall(call)
        self._done.put(request)
        while not request.done.wait(0.2):
            if self.clock.aborted:  # the engine may have given up on this trial: nobody is left to answer
                raise OperatorAbort("the trial was aborted while waiting for the operator")
        if request.error is not None:
            raise request.error
        result: T = request.result
        return result

    def _carry_out(self, request: _OperatorCall) -> None:
        """On the engine thread. A Ctrl-C while the operator is being asked goes on to pause the campaign,
        and the waiting trial ends with an `OperatorAbort`; anything else the call raised (the operator's
        input closed) ends the trial with it."""
        try:
            if self.clock.aborted:
                raise OperatorAbort("the campaign is pausing: the operator is not asked any more")
            request.result = request.call()
        except KeyboardInterrupt:
            request.error = OperatorAbort("interrupted by the operator (Ctrl-C)")
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the trial that asked, which ends with it
            request.error = exc
        finally:
            request.done.set()

    def submit(self, job: Job) -> None:
        def work() -> None:
            start = self.clock.now()
            measurement: Measurement | None = None
            error: BaseException | None = RuntimeError("the trial's worker thread ended without a result")
            try:
                measurement, error = _run(job, self.clock, self.journal, self.operator, main_thread=False)
            finally:  # a completion always arrives: the engine waits for one per trial
                self._done.put(Completion(job, measurement, error, start, self.clock.now()))

        thread = threading.Thread(target=work, name=f"trial-{job.trial_id}", daemon=True)
        self._running[job.trial_id] = (thread, job)
        thread.start()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def next_completion(self, timeout: float | None = None) -> Completion:
        """The next trial to finish, carrying out the operator calls that arrive meanwhile; `queue.Empty`
        when `timeout` seconds pass first."""
        # Waiting in short slices keeps the main thread responsive to Ctrl-C.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                done = self._done.get(timeout=0.2 if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if deadline is not None:
                    raise
                continue
            if isinstance(done, _OperatorCall):
                self._carry_out(done)
                continue
            self._running.pop(done.job.trial_id, None)
            return done

    def abort_running(self) -> list[tuple[Station, BaseException]]:
        """Stop every trial in flight now (operator abort): each one's next wait raises `OperatorAbort`,
        and a driver with its own `abort()` (the MBE watchdog) stops its recipe and goes safe at once.
        Each trial still comes back through `next_completion`, with the error it ended on. Returns the
        stations whose `abort()` raised, with what it raised (the others are still aborted)."""
        self.clock.abort()
        failed: list[tuple[Station, BaseException]] = []
        for _, job in list(self._running.values()):
            if isinstance(job.station.driver, Abortable):
                try:
                    job.station.driver.abort()
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # noqa: BLE001 - every other station must still be stopped
                    failed.append((job.station, exc))
        return failed

    def abandon_all(self) -> list[Job]:
        jobs = [job for _, job in self._running.values()]
        self._running.clear()
        return jobs


Dispatcher = VirtualDispatcher | ThreadedDispatcher


def describe_error(exc: Exception) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}
