"""The Python API of a campaign: create/open, run, resume, ask, tell, status, export.

The CLI is a thin layer over this class, after sqlite-utils: a library first.

    >>> c = Campaign.open("opv.sqlite", writer=True)    # a TRMC campaign that was interrupted
    >>> c.status()["results"], c.status()["budget"]
    (5, 10)
    >>> halt = c.resume()    # put the interrupted trial right, then run until a stop rule fires or it pauses
    >>> halt.text, halt.exit_code
    ('budget: 10 of 10 trials done', 0)
    >>> c.close()

By hand (`ask` proposes, a person measures, `tell` records):

    >>> c = Campaign.create("protocols/trmc_opv_blend.yaml", "by-hand.sqlite")
    >>> [(trial, round(conditions["anneal_temp"], 1)) for trial, conditions in c.ask(2)]
    [(1, ...), (2, ...)]
    >>> c.tell(1, {"phi_sum_mu_max": "2.1e-3 cm^2/(V*s)", "tau_half": "180 ns"})
    >>> c.tell(2, {}, failed=True, note="the film dewetted")
    >>> c.status()["counts"]
    {'measured': 1, 'failed': 1}
    >>> c.close()
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedloop.controller import warm_start
from closedloop.controller.engine import history
from closedloop.controller.engine.clock import VirtualClock, WallClock
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.engine import CampaignEngine
from closedloop.controller.engine.events import Subscriber
from closedloop.controller.engine.gate import SafetyGate
from closedloop.controller.engine.halts import Halt
from closedloop.controller.engine.operator import Approver, OperatorControl
from closedloop.controller.engine.remote import RemoteOperator
from closedloop.controller.protocol.limits import unchecked_warning
from closedloop.controller.protocol.model import (
    DICT_SOURCE,
    Protocol,
    load_protocol,
    parse_protocol_text,
    protocol_from_dict,
)
from closedloop.controller.protocol.validate import require_valid
from closedloop.controller.results_csv import ResultsFileError, read_results, result_value
from closedloop.controller.store.campaign_store import CampaignStore, software_versions
from closedloop.controller.store.control import ControlChannel
from closedloop.controller.store.errors import UnknownTrial
from closedloop.controller.store.reads import TrialRecord
from closedloop.drivers.base import Measurement
from closedloop.planners.space import Conditions, Problem

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.controller.engine.stations import Link


@dataclass(frozen=True)
class Offer:
    """A trial `ask` hands out; it unpacks as `(trial, conditions)`. `again` says why it is not a new
    proposal (handed out before with no result told, or an abandoned initial-design point offered again);
    None for a new one."""

    trial: int
    conditions: Conditions
    again: str | None = None
    fidelity: str | None = None  # the source to measure it with (a protocol with fidelities); None: the target

    def __iter__(self) -> Iterator[Any]:
        return iter((self.trial, self.conditions))


class CampaignOver(Exception):
    """`ask` after a stop rule of the protocol fired (`halt` says which): exit code 1, nothing changed.
    `ask(force=True)` hands out trials anyway."""

    def __init__(self, halt: Halt) -> None:
        super().__init__(f"the campaign's stop rule fired ({halt.reason}), so ask hands out no "
                         "more trials; to measure more anyway: ask --force (Python: ask(n, force=True))")
        self.halt = halt


class BadInput(ValueError):
    """A user error (unknown trial, wrong unit, ...): exit code 2, nothing stored was changed.

    `trial` and `field` name the trial and value at fault when there are, so a results file can point at
    its line and column.
    """

    def __init__(self, message: str, *, trial: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.trial = trial
        self.field = field


TIME_SCALE_IN_PROCESS = (
    "--time-scale paces the controller with an emulator on a real port; this campaign's instrument is "
    "simulated in this process, in virtual time: drop --time-scale, or give the emulator's --port"
)


def default_db_path(protocol: Protocol) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("campaigns") / f"{protocol.name}-{stamp}.sqlite"


class Campaign:
    def __init__(self, store: CampaignStore, protocol: Protocol) -> None:
        self.store = store
        self.protocol = protocol
        self.seed = int(store.campaign()["seed"])

    # ---- opening --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        protocol: str | Path | Mapping[str, Any],
        db_path: str | Path | None = None,
        *,
        seed: int | None = None,
        sim: bool = False,
        port: str | None = None,
    ) -> Campaign:
        """A new campaign file for a protocol: a YAML file's path, or the same sections as a Python dict
        (checked alike; the campaign stores it as YAML text). A simulated campaign's file is written
        without a disk flush per commit: it survives a killed process, only a power cut may lose its last
        writes.
        `port` is the instrument link the campaign will run against, if not the protocol's `connection`.
        Raises `ProtocolError`, before any file is written, for anything `closedloop validate` refuses."""
        from_file = isinstance(protocol, str | os.PathLike)
        parsed = load_protocol(protocol) if from_file else protocol_from_dict(protocol)  # type: ignore[arg-type]
        require_valid(parsed)
        path = Path(db_path) if db_path else default_db_path(parsed)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = CampaignStore.create(
            path,
            name=parsed.name,
            protocol_text=parsed.text,
            protocol_path=str(Path(protocol).resolve()) if from_file else DICT_SOURCE,  # type: ignore[arg-type]
            seed=parsed.planner.seed if seed is None else seed,
            versions=software_versions(),
            durable=not _link(parsed, sim=sim, connection=port).in_process,
        )
        return cls(store, parsed)

    @classmethod
    def open(cls, db_path: str | Path, *, writer: bool = False) -> Campaign:
        store = CampaignStore.open(db_path, writer=writer)
        info = store.campaign()
        # The stored text is the campaign's protocol: the file on disk may have been edited since.
        protocol = parse_protocol_text(info["protocol_text"], info["protocol_path"])
        return cls(store, protocol)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Campaign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running --------------------------------------------------------------------------------

    def engine(
        self,
        *,
        sim: bool = False,
        approver: Approver | None = None,
        on_event: Subscriber | None = None,
        port: str | None = None,
        time_scale: float | None = None,
        approve_every: bool = False,
    ) -> CampaignEngine:
        """The engine on this campaign's instrument. `port` replaces the protocol's instrument
        connection (a device path or pyserial URL, as the CLI's --port); `time_scale` runs the wall clock that many times
        faster, in step with an emulator started with the same `--time-scale` (only on a live link:
        in-process simulators run in virtual time). `approve_every`: `approver` decides every proposal
        even where the protocol needs no approval (what `--approve` means); journaled at the start."""
        from closedloop.controller.engine.stations import make_stations  # see _link

        # The dashboard may pause, resume or abort any run (its token guards who may); it decides proposals
        # only when it is the approver. Requests left from before this run are expired, not carried out.
        control = approver if isinstance(approver, RemoteOperator) else self.remote_operator()
        control.start()
        stations = make_stations(self.protocol, seed=self.seed, sim=sim, connection=port)
        return self._engine(stations, approver=approver, on_event=on_event, time_scale=time_scale,
                            approve_every=approve_every, control=control)

    def remote_operator(self) -> RemoteOperator:
        """The operator at the dashboard (`closedloop serve`), reading this campaign's control channel: pass
        it as `approver` to `run` or `resume` and proposals awaiting approval are decided from the page."""
        return RemoteOperator(ControlChannel(self.store.path))

    def _engine(
        self,
        stations: list[Station],
        *,
        approver: Approver | None = None,
        on_event: Subscriber | None = None,
        time_scale: float | None = None,
        gate: SafetyGate | None = None,
        approve_every: bool = False,
        control: OperatorControl | None = None,
    ) -> CampaignEngine:
        # Trials measured by hand (no stations) run on the wall clock, like the person measuring them.
        virtual = bool(stations) and all(s.virtual for s in stations)
        if virtual and time_scale is not None:
            raise BadInput(TIME_SCALE_IN_PROCESS)
        clock: VirtualClock | WallClock
        if virtual:
            clock, origin = VirtualClock(start=self._last_virtual_time()), 0.0
        else:
            origin = float(self.store.campaign()["created_at"])
            try:
                clock = WallClock(1.0 if time_scale is None else time_scale, origin=origin)
            except ValueError as e:
                raise BadInput(f"--time-scale: {e}") from None
        from closedloop.controller.engine.build import build_engine  # see _link

        return build_engine(
            self.protocol, self.store, seed=self.seed, stations=stations, clock=clock, gate=gate,
            approver=approver, control=control, subscribers=() if on_event is None else (on_event,),
            elapsed_origin=origin, approve_every=approve_every,
        )

    def run(
        self,
        *,
        sim: bool = False,
        approver: Approver | None = None,
        on_event: Subscriber | None = None,
        port: str | None = None,
        time_scale: float | None = None,
        approve_every: bool = False,
    ) -> Halt:
        """Run until a stop rule fires or the campaign pauses, and return why (`Halt`: `paused`, `kind`,
        `text`). `port` and `time_scale`: see `engine`; both are journaled as a "connection" event."""
        engine = self.engine(sim=sim, approver=approver, on_event=on_event, port=port,
                             time_scale=time_scale, approve_every=approve_every)
        try:
            self._record_link(port, time_scale)
            self._record_unchecked()
            return engine.run()
        finally:
            self._close(engine.stations)

    def resume(
        self,
        *,
        sim: bool = False,
        approver: Approver | None = None,
        on_event: Subscriber | None = None,
        port: str | None = None,
        time_scale: float | None = None,
        approve_every: bool = False,
    ) -> Halt:
        """Reconcile trials a crash left dispatched/running, then continue the campaign. Without
        `port` (and without `sim`) it continues on the link the campaign last ran against with
        `--port`, at that time scale: a live campaign never falls back silently to an in-process simulator."""
        require_valid(self.protocol)  # what validate refuses today does not continue either
        port, time_scale = self.live_link(port, time_scale, sim=sim)
        engine = self.engine(sim=sim, approver=approver, on_event=on_event, port=port,
                             time_scale=time_scale, approve_every=approve_every)
        try:
            self._record_link(port, time_scale)
            self._record_unchecked()
            return self._continue(engine)
        finally:
            self._close(engine.stations)

    def run_with(self, stations: list[Station], *, gate: SafetyGate, on_event: Subscriber | None = None) -> Halt:
        """Run (or continue) on stations built elsewhere, with their own gate: a stand-in instrument such as
        a counterfactual's GP surrogate. The stations are closed at the end."""
        engine = self._engine(stations, gate=gate, on_event=on_event)
        try:
            return self._continue(engine) if self.store.trials() else engine.run()
        finally:
            self._close(engine.stations)

    def _continue(self, engine: CampaignEngine) -> Halt:
        engine.reconcile()
        return engine.run(resumed=True)

    def live_link(
        self, connection: str | None, time_scale: float | None, *, sim: bool = False
    ) -> tuple[str | None, float | None]:
        """The (connection, time scale) a resume uses: those given, else those of the last `--port` run."""
        if connection is not None or sim:
            return connection, time_scale
        recorded = self.store.events(kinds=["connection"], limit=1)
        if not recorded:
            return None, time_scale
        data = recorded[0]["data"] or {}
        scale = time_scale if time_scale is not None else data.get("time_scale")
        # A line's steps keep their own connections (the protocol's): only the pace carries over.
        return (None if self.protocol.is_line else data.get("connection")), scale

    def _record_link(self, connection: str | None, time_scale: float | None) -> None:
        if connection is None and time_scale is None:
            return  # the protocol's own connection, on the real clock: the stored protocol says it all
        pace = f", clock x{time_scale:g} (emulator time scale)" if time_scale is not None else ""
        for step in self.protocol.steps():
            if step.instrument is None:
                continue
            where = connection or step.instrument.connection
            at = f"step {step.name}: " if self.protocol.is_line else ""
            self.store.record_event(
                "connection",
                detail=f"{at}instrument {step.instrument.driver} at {where}{pace}",
                data={"connection": where, "time_scale": time_scale} | ({"step": step.name} if at else {}),
            )

    def _record_unchecked(self) -> None:
        """Journal, at each start, that parameters run without envelope limits (`envelope.unchecked`)."""
        warning = unchecked_warning(self.protocol)
        if warning is not None:
            self.store.record_event("envelope_unchecked", detail=warning)

    # ---- manual instruments: ask / tell ------------------------------------------------------------

    def ask(self, n: int = 1, *, new: bool = False, force: bool = False) -> list[Offer]:
        """Hand `n` trials to an operator to run by hand; they are stored as dispatched to 'manual' until
        `tell`. Trials already waiting come first, as a planner of Ax or BayBE would treat them: those handed
        out before with no result told are offered again (and trials stored but never run), unless `new`,
        which proposes `n` new trials with the waiting ones passed to the planner as pending. Among new
        proposals, abandoned initial-design points come back before the design moves on.

        Refused with `CampaignOver` once a stop rule of the protocol has fired (budget, wall time, target,
        no improvement), and with `BadInput` for an `n` that needs more new trials than the budget has room
        for; `force` hands out trials past both. Proposals the safety gate refuses are journaled and
        proposed again (three in a row end it)."""
        if n < 1:
            raise BadInput(f"-n must be at least 1, got {n}")
        engine = self._engine([])
        halt = None if force else engine.stop_rule()
        if halt is not None:
            raise CampaignOver(halt)
        if not force:
            self._check_room_for(n, waiting=0 if new else len(engine.waiting()), new=new)
        offers = []
        for o in engine.hand_out_next(n, new=new):
            trial = self.store.trial(o.trial_id)
            offers.append(Offer(o.trial_id, trial.conditions, o.again, trial.fidelity))
        return offers

    def _check_room_for(self, n: int, *, waiting: int, new: bool) -> None:
        """Refuse (rather than cap) an `ask` that needs more new trials than the budget has room for. Handed-out
        trials are a commitment that cannot be taken back, and an -n past the budget is most likely a typo:
        refusing changes nothing, and the message says how many can be asked for (or `--force`)."""
        trials = self.store.trials()
        budget = self.protocol.budget.trials
        results, pending = history.n_results(trials), len(history.pending(trials))
        left = max(0, budget - results - pending)
        if n - waiting <= left:
            return
        used = f"{_count(results, 'result')} told, {pending} pending"
        again = f"{_count(waiting, 'pending trial')} offered again and " if waiting else ""
        flag = "--new -n" if new else "-n"
        if waiting + left == 0:
            hint = ("tell the pending trials' results first (ask without --new offers them again)" if new and pending
                    else "tell the pending trials' results first" if pending else "start a new campaign with a larger budget.trials")
            raise BadInput(f"{flag} {n}: no trials left in the budget of {budget} ({used}); {hint}, or add --force "
                           "to go past the budget")
        raise BadInput(f"{flag} {n}: {again}{_count(left, 'trial')} left in the budget of {budget} ({used}); ask for "
                       f"at most {waiting + left} ({flag} {waiting + left}), or add --force to go past the budget")

    def tell(self, trial_id: int, values: Mapping[str, str | float], *, failed: bool = False, note: str = "") -> None:
        """Record a result entered by hand. Values may carry units ("120 ns"). Every value must be a finite
        number (and > 0 for a log-scale objective): a sample that gave none is told with `failed=True`."""
        self.tell_many([(trial_id, values, failed)], note=note)

    def tell_many(self, entries: Sequence[tuple[int, Mapping[str, str | float], bool]], *, note: str = "") -> None:
        """Check every entry first, then record them in one transaction: all entries or none."""
        seen: set[int] = set()
        checked = []
        for trial_id, values, failed in entries:
            if trial_id in seen:
                raise BadInput(f"trial {trial_id} appears twice", trial=trial_id)
            seen.add(trial_id)
            try:
                checked.append((trial_id, self._measurement_from_operator(trial_id, values, failed, note)))
            except BadInput as exc:
                raise BadInput(str(exc), trial=trial_id, field=exc.field) from None
        engine = self._engine([])
        with self.store.batch():
            for trial_id, m in checked:
                engine.ingest(trial_id, m)

    def tell_csv(self, path: str | Path, *, note: str = "") -> int:
        """Record the results of a CSV file (see `controller.results_csv`): every row or none. Returns how
        many rows were recorded; a problem is a BadInput naming the file and line."""
        try:
            problem = self.protocol.to_problem()
            rows = read_results(path, measured=self.measured_units(), objectives=[o.name for o in problem.objectives],
                                constrained=[c.name for c in problem.outcome_constraints])
        except ResultsFileError as exc:
            raise BadInput(str(exc)) from None
        try:
            self.tell_many([(r.trial, r.values, r.failed) for r in rows], note=note)
        except BadInput as exc:
            where = next((f"{path}:{r.line}" for r in rows if r.trial == exc.trial), str(path))
            untouched = f" (none of its {len(rows)} rows was recorded)" if len(rows) > 1 else ""
            raise BadInput(f"{where}: {exc}{untouched}",
                           trial=exc.trial, field=exc.field) from None
        return len(rows)

    def _measurement_from_operator(
        self, trial_id: int, values: Mapping[str, str | float], failed: bool, note: str
    ) -> Measurement:
        try:
            trial = self.store.trial(trial_id)
        except UnknownTrial:
            raise BadInput(f"trial {trial_id}: no such trial in {self.store.path}") from None
        if trial.state in ("measured", "failed"):
            raise BadInput(f"trial {trial_id} is already {trial.state}; nothing changed")
        if trial.state not in ("dispatched", "running"):
            raise BadInput(f"trial {trial_id} is {trial.state}, not waiting for a result")
        if failed and values:
            # The values of one trial are stored together or not at all: never some kept, some dropped.
            raise BadInput(f"trial {trial_id}: a failed sample (--failed) is recorded without values; "
                           f"drop {', '.join(values)} or drop --failed", field=next(iter(values)))
        parsed = {name: self._operator_value(trial_id, name, raw) for name, raw in values.items()}
        missing = [name for name in self.required_values(trial.fidelity) if name not in parsed]
        if not failed and missing:
            raise BadInput(f"trial {trial_id}: missing a value for {', '.join(missing)} (or mark it --failed)")
        units_of = self.measured_units()
        return Measurement(
            values=parsed,
            units={name: units_of[name] for name in parsed},
            status="failed_sample" if failed else "ok",
            analysis="manual",
            analysis_version="1",
            instrument=trial.instrument or "manual",
            detail=note or "entered by the operator",
        )

    def required_values(self, fidelity: str | None = None) -> list[str]:
        """What every result told by hand must give: each objective, then each other quantity an outcome
        constraint names (without it the planner could not tell whether the sample meets the constraint).
        A trial of a cheap source (`fidelity`) gives what that source measures."""
        problem = self.protocol.to_problem()
        proxy = next((f for f in problem.fidelities if f.name == fidelity and not f.target), None)
        if proxy is not None:
            return [proxy.measures]
        names = [o.name for o in problem.objectives] + [c.name for c in problem.outcome_constraints]
        return list(dict.fromkeys(names))

    def measured_units(self) -> dict[str, str]:
        """Each quantity a result may give (the objectives and what the instrument measures) -> the unit it is
        stored in: an objective's declared unit, else the unit the instrument measures it in."""
        return dict(self.protocol.description_of_instrument().measures) | self.protocol.objective_units()

    def _operator_value(self, trial_id: int, name: str, raw: str | float) -> float:
        """One value typed by a person, in the campaign's unit for it; refused unless it can be a measurement."""
        units_of = self.measured_units()
        if name not in units_of:
            known = ", ".join(sorted(units_of))
            raise BadInput(f"trial {trial_id}: {name}: not a measured quantity of this campaign ({known})", field=name)
        log = name in {o.name for o in self.protocol.to_problem().objectives if o.log}
        try:
            return result_value(name, raw, units_of[name], log=log)
        except ValueError as exc:
            raise BadInput(f"trial {trial_id}: {exc}", field=name) from None

    # ---- warm starts: earlier results ---------------------------------------------------------------

    def import_csv(self, path: str | Path, *, note: str = "") -> warm_start.Imported:
        """Earlier results from a CSV file (an earlier table, a literature table) as `warm_start` trials:
        every row or none, a problem a BadInput naming file:line:column (see `controller.warm_start`)."""
        return self._import(lambda target: warm_start.read_csv(Path(path), target), note)

    def import_campaign(self, path: str | Path, *, note: str = "") -> warm_start.Imported:
        """The results of another campaign file as `warm_start` trials (those not imported before)."""
        return self._import(lambda target: warm_start.read_campaign(Path(path), target, self.store), note)

    def _import(self, read: Callable[[warm_start.Target], warm_start.ImportSource], note: str) -> warm_start.Imported:
        target = warm_start.Target.of(self.protocol, self.measured_units())
        try:
            return warm_start.record(self.store, read(target), target.measured_units, note=note)
        except warm_start.WarmStartError as exc:
            raise BadInput(str(exc)) from None

    # ---- reading ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts, best, last events, and `status`: the stored status checked against the writer lock, so
        a run that was killed reads `interrupted` (see `store.activity`), never `running`."""
        info = self.store.campaign()
        activity = self.store.activity()
        writer = activity.writer
        trials = self.store.trials()
        problem = self.protocol.to_problem()
        obs = history.observations(problem, trials)
        best = history.best(problem, obs)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        return {
            "campaign": str(self.store.path),
            "outcome_constraints": self._feasibility(problem, trials),
            "name": info["name"],
            "status": activity.status,
            "stored_status": activity.stored,
            "writer": {"alive": writer.alive, "pid": writer.pid, "host": writer.host, "since": writer.since},
            "last_heard": activity.last_heard,
            "stop_reason": info["stop_reason"],
            "trials": len(trials),
            "results": history.n_results(trials),
            "warm_start": sum(t.origin == history.WARM_START for t in trials),  # imported: not in the budget
            "budget": self.protocol.budget.trials,
            "counts": counts,
            "best": None if best is None else {"conditions": best.conditions, "values": best.values},
            "fidelities": self._spend(problem, trials),
            "last_events": self.store.events(limit=8),
        }

    def _spend(self, problem: Problem, trials: Sequence[TrialRecord]) -> dict[str, Any] | None:
        """Instrument time spent at the declared costs, in all and per source; None without fidelities."""
        if not problem.fidelities:
            return None
        spend = history.spend_by_source(problem, trials)
        budget = self.protocol.budget.instrument_time
        return {"spent_hours": sum(s.hours for s in spend), "budget_hours": None if budget is None else budget / 3600,
                "sources": [{"name": s.fidelity.name, "target": s.fidelity.target, "cost_hours": s.fidelity.cost,
                             "results": s.results, "spent_hours": s.hours} for s in spend]}

    def _feasibility(self, problem: Problem, trials: Sequence[TrialRecord]) -> dict[str, Any] | None:
        """How many measured trials meet each outcome constraint, and all of them; None without constraints."""
        if not problem.outcome_constraints:
            return None
        measured = [t.values for t in trials if t.state == "measured"]
        return {
            "measured": len(measured),
            "feasible": sum(history.feasible(problem, v) for v in measured),
            "constraints": [{"constraint": text, "met": sum(history.constraint_holds(c, v) for v in measured)}
                            for text, c in zip(self.protocol.outcome_constraints, problem.outcome_constraints,
                                               strict=True)],
        }

    # ---- helpers ----------------------------------------------------------------------------------

    def to_pandas(self) -> pd.DataFrame:
        """One tidy row per trial, the same columns as `closedloop export` (conditions, measured values,
        state, origin, proposer, times); each column's unit is in `frame.attrs["units"]`."""
        from closedloop.controller.store.export import tidy_table  # pandas: loaded when asked for

        table, columns = tidy_table(self.store, condition_units=self.protocol.parameter_units())
        table.attrs["units"] = {name: column["unit"] for name, column in columns.items()}
        return table

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (default: next to the campaign file, `.html`); returns its path."""
        from closedloop.controller.report.html import write_report  # plotly: loaded when asked for

        return write_report(self.store, path)

    def _close(self, stations: list[Station]) -> None:
        """Close every station's driver, each even if another's close raised; a failure is journaled (the
        instrument was made safe before, so nothing is left running)."""
        for station in stations:
            try:
                station.driver.close()
            except BaseException as exc:  # noqa: BLE001 - the other stations must still be closed
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.store.record_event("driver_error", detail=f"{station.name}: close: {type(exc).__name__}: {exc}")

    def _last_virtual_time(self) -> float:
        events = self.store.events()
        times = [e["virtual_t"] for e in events if e.get("virtual_t") is not None]
        return max(times) if times else 0.0



def _link(protocol: Protocol, *, sim: bool, connection: str | None) -> Link:
    # Building stations and engines loads the drivers' simulators and the planners; reading a campaign
    # (`closedloop status`, `Campaign.open(...).status()`) must not, so those modules load when used.
    from closedloop.controller.engine.stations import resolve_link

    return resolve_link(protocol, sim=sim, connection=connection)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


__all__ = ["BadInput", "Campaign", "CampaignOver", "Halt", "Offer"]
