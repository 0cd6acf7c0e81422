"""The Python API of a campaign: create/open, run, resume, ask, tell, status, export.

The CLI is a thin layer over this class, after sqlite-utils: a library first.

    >>> c = Campaign.create("protocols/trmc_opv_blend.yaml", "opv.sqlite")
    >>> c.run()                      # until a stop rule fires
    >>> Campaign.open("opv.sqlite").status()["best"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from closedloop.controller.engine import history
from closedloop.controller.engine.clock import VirtualClock, WallClock
from closedloop.controller.engine.dispatch import Station, ThreadedDispatcher, VirtualDispatcher
from closedloop.controller.engine.engine import Approver, CampaignEngine, EngineSettings, ProgressHook
from closedloop.controller.engine.gate import SafetyGate
from closedloop.controller.engine.stations import make_stations, simulator_model, with_connection
from closedloop.controller.protocol.model import Protocol, parse_protocol_text
from closedloop.controller.store.campaign_store import CampaignStore, software_versions
from closedloop.controller.store.errors import UnknownTrial
from closedloop.drivers.base import InstrumentContext, Measurement
from closedloop.planners.registry import make_planner
from closedloop.planners.space import Conditions


class BadInput(ValueError):
    """A user error (unknown trial, wrong unit, ...): exit code 2, nothing stored was changed."""


TIME_SCALE_IN_PROCESS = (
    "--time-scale paces the controller with an emulator on a real port; this campaign's instrument is "
    "simulated in this process, in virtual time: drop --time-scale, or give the emulator's --port"
)


def default_db_path(protocol: Protocol) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("campaigns") / f"{protocol.name}-{stamp}.sqlite"


def settings_from(protocol: Protocol, seed: int) -> EngineSettings:
    return EngineSettings(
        problem=protocol.to_problem(),
        seed=seed,
        max_trials=protocol.budget.trials,
        batch_size=protocol.planner.batch_size,
        max_wall_time_s=protocol.wall_time_s,
        no_improvement=protocol.stop.no_improvement,
        stop_on_target=protocol.stop.target_reached,
        approval=protocol.approval_mode,
        trusted_region=protocol.trusted_region_bounds(),
        fault_retries=protocol.failures.instrument_fault_retries,
        on_fault=protocol.failures.on_fault,
        candidates=protocol.candidates_frame(),
    )


def planner_spec(protocol: Protocol) -> tuple[str, dict[str, Any]]:
    """The planner name and options a protocol asks for. Replay builds its planners from this too, so a
    re-derived proposal comes from exactly the planner the campaign used."""
    p = protocol.planner
    name = "botorch" if p.acquisition != "random" else "random"
    return name, {"n_initial": p.initial.n, "initial_method": p.initial.method, **(p.options or {})}


class Campaign:
    def __init__(self, store: CampaignStore, protocol: Protocol) -> None:
        self.store = store
        self.protocol = protocol
        self.seed = int(store.campaign()["seed"])

    # ---- opening --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        protocol_path: str | Path,
        db_path: str | Path | None = None,
        *,
        seed: int | None = None,
        sim: bool = False,
        connection: str | None = None,
    ) -> Campaign:
        """A new campaign file for a protocol. A simulated campaign's file is written without a disk
        flush per commit: it still survives a killed process, only a power cut may lose its last writes.
        `connection` is the instrument link the campaign will run against, if not the protocol's."""
        from closedloop.controller.protocol.model import load_protocol

        protocol = load_protocol(protocol_path)
        path = Path(db_path) if db_path else default_db_path(protocol)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = CampaignStore.create(
            path,
            name=protocol.name,
            protocol_text=protocol.text,
            protocol_path=str(Path(protocol_path).resolve()),
            seed=protocol.planner.seed if seed is None else seed,
            versions=software_versions(),
            durable=simulator_model(protocol if connection is None else with_connection(protocol, connection), sim) is None,
        )
        return cls(store, protocol)

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
        progress: ProgressHook | None = None,
        connection: str | None = None,
        time_scale: float | None = None,
    ) -> CampaignEngine:
        """`connection` replaces the protocol's instrument connection (a device path or pyserial URL);
        `time_scale` runs the wall clock that many times faster, in step with an emulator started with
        the same `--time-scale` (only on a live link: in-process simulators run in virtual time)."""
        stations = make_stations(self.protocol, seed=self.seed, sim=sim, connection=connection)
        virtual = all(getattr(s.driver, "virtual_time", False) for s in stations)
        journal = self._journal
        confirm = self._confirm_operator_step(approver)
        if virtual and time_scale is not None:
            raise BadInput(TIME_SCALE_IN_PROCESS)
        if virtual:
            clock: VirtualClock | WallClock = VirtualClock(start=self._last_virtual_time())
            dispatcher: Any = VirtualDispatcher(clock, journal, confirm)
            origin = 0.0
        else:
            origin = float(self.store.campaign()["created_at"])
            try:
                clock = WallClock(1.0 if time_scale is None else time_scale, origin=origin)
            except ValueError as e:
                raise BadInput(f"--time-scale: {e}") from None
            dispatcher = ThreadedDispatcher(clock, journal, confirm)
        settings = settings_from(self.protocol, self.seed)
        gate = SafetyGate(settings.problem.space, stations[0].driver.describe().envelope, self.protocol.to_instrument_units)
        return CampaignEngine(
            self.store,
            settings,
            planner=self._planner(),
            fallback_planner=make_planner("sobol"),
            stations=stations,
            gate=gate,
            dispatcher=dispatcher,
            approver=approver,
            progress=progress,
            elapsed_origin=origin,
        )

    def run(
        self,
        *,
        sim: bool = False,
        approver: Approver | None = None,
        progress: ProgressHook | None = None,
        connection: str | None = None,
        time_scale: float | None = None,
    ) -> str:
        """Run until a stop rule fires and return its reason; raises `Paused` if paused.
        `connection` and `time_scale`: see `engine`; both are journaled as a "connection" event."""
        engine = self.engine(sim=sim, approver=approver, progress=progress, connection=connection, time_scale=time_scale)
        try:
            self._record_link(connection, time_scale)
            return engine.run()
        finally:
            for s in engine.stations:
                s.driver.close()

    def resume(
        self,
        *,
        sim: bool = False,
        approver: Approver | None = None,
        progress: ProgressHook | None = None,
        connection: str | None = None,
        time_scale: float | None = None,
    ) -> str:
        """Reconcile trials a crash left dispatched/running, then continue the campaign. Without
        `connection` (and without `sim`) it continues on the link the campaign last ran against with
        `--port`, at that time scale: a live campaign never falls back silently to an in-process simulator."""
        connection, time_scale = self.live_link(connection, time_scale, sim=sim)
        engine = self.engine(sim=sim, approver=approver, progress=progress, connection=connection, time_scale=time_scale)
        try:
            self.store.record_event("resume", detail="campaign resumed", virtual_t=self._vt(engine))
            self._record_link(connection, time_scale)
            self._reconcile(engine)
            return engine.run()
        finally:
            for s in engine.stations:
                s.driver.close()

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
        return data.get("connection"), time_scale if time_scale is not None else data.get("time_scale")

    def _record_link(self, connection: str | None, time_scale: float | None) -> None:
        if connection is None and time_scale is None:
            return  # the protocol's own connection, on the real clock: the stored protocol says it all
        where = connection or self.protocol.instrument.connection
        pace = f", clock x{time_scale:g} (emulator time scale)" if time_scale is not None else ""
        self.store.record_event(
            "connection",
            detail=f"instrument {self.protocol.instrument.driver} at {where}{pace}",
            data={"connection": where, "time_scale": time_scale},
        )

    def _reconcile(self, engine: CampaignEngine) -> None:
        stations = {s.name: s for s in engine.stations}
        for t in self.store.trials(states=["dispatched", "running"]):
            station = stations.get(t.instrument or "")
            recovered: Measurement | None = None
            if station is not None:
                ctx = InstrumentContext(clock=engine.clock, trial_id=t.id)
                recovered = station.driver.recover(t.id, ctx)
            if recovered is not None:
                self.store.record_event("recovered", trial_id=t.id, detail="result recovered from the instrument")
                self.store.record_measurement(t.id, recovered, virtual_t=self._vt(engine))
                continue
            self.store.transition(
                t.id, "abandoned", detail="interrupted: the controller stopped before a result was stored",
                virtual_t=self._vt(engine),
            )
            engine._retry(t.id, "re-queued after interruption")

    # ---- manual instruments: ask / tell ------------------------------------------------------------

    def ask(self, n: int = 1) -> list[tuple[int, Conditions]]:
        """Propose `n` trials for an operator to run by hand; they are stored as dispatched to 'manual'."""
        if n < 1:
            raise BadInput(f"-n must be at least 1, got {n}")
        settings = settings_from(self.protocol, self.seed)
        gate = SafetyGate(
            settings.problem.space, self.protocol.description_of_instrument().envelope, self.protocol.to_instrument_units
        )
        trials = self.store.trials()
        obs = history.observations(settings.problem, trials)
        seed = self.seed * 1_000_003 + len(trials)
        proposals = self._planner().propose(settings.problem, obs, history.pending(trials), n, seed, settings.candidates)
        out = []
        for p in proposals:
            gate.check(p.conditions)
            trial_id = self.store.add_trial(
                p.conditions, proposer=str(p.provenance.get("planner", "")), origin="manual", provenance=p.provenance
            )
            self.store.transition(trial_id, "approved", detail="ask")
            self.store.transition(trial_id, "dispatched", instrument="manual", detail="handed to the operator")
            out.append((trial_id, p.conditions))
        return out

    def tell(self, trial_id: int, values: Mapping[str, str | float], *, failed: bool = False, note: str = "") -> None:
        """Record a result entered by hand. Values may carry units ("120 ns"); NaN/inf become a failed sample."""
        self.tell_many([(trial_id, values, failed)], note=note)

    def tell_many(self, entries: Sequence[tuple[int, Mapping[str, str | float], bool]], *, note: str = "") -> None:
        """Check every entry first, then record them: a bad entry changes nothing at all."""
        seen: set[int] = set()
        checked = []
        for trial_id, values, failed in entries:
            if trial_id in seen:
                raise BadInput(f"trial {trial_id} appears twice")
            seen.add(trial_id)
            checked.append((trial_id, self._measurement_from_operator(trial_id, values, failed, note)))
        for trial_id, m in checked:
            self.store.record_measurement(trial_id, m)

    def _measurement_from_operator(
        self, trial_id: int, values: Mapping[str, str | float], failed: bool, note: str
    ) -> Measurement:
        from closedloop.controller.protocol.units import parse_quantity_to

        try:
            trial = self.store.trial(trial_id)
        except UnknownTrial:
            raise BadInput(f"trial {trial_id}: no such trial in {self.store.path}") from None
        if trial.state in ("measured", "failed"):
            raise BadInput(f"trial {trial_id} is already {trial.state}; nothing changed")
        if trial.state not in ("dispatched", "running"):
            raise BadInput(f"trial {trial_id} is {trial.state}, not waiting for a result")
        problem = self.protocol.to_problem()
        units_of = self.protocol.objective_units() | dict(self.protocol.description_of_instrument().measures)
        parsed: dict[str, float] = {}
        units: dict[str, str] = {}
        for name, raw in values.items():
            if name not in units_of:
                known = ", ".join(sorted(units_of))
                raise BadInput(f"trial {trial_id}: {name}: not a measured quantity of this campaign ({known})")
            try:
                parsed[name] = parse_quantity_to(raw, units_of[name])
            except ValueError as exc:
                raise BadInput(f"trial {trial_id}: {name}={raw!r}: {exc}") from None
            units[name] = units_of[name]
        nonfinite = [k for k, v in parsed.items() if not math.isfinite(v)]
        missing = [o.name for o in problem.objectives if o.name not in parsed]
        if not failed and not nonfinite and missing:
            raise BadInput(f"trial {trial_id}: missing a value for {', '.join(missing)} (or mark it --failed)")
        ok = not failed and not nonfinite
        detail = note or (f"non-finite value for {', '.join(nonfinite)}" if nonfinite else "entered by the operator")
        return Measurement(
            values=parsed if ok else {},
            units=units if ok else {},
            status="ok" if ok else "failed_sample",
            analysis="manual",
            analysis_version="1",
            instrument=trial.instrument or "manual",
            detail=detail,
        )

    # ---- reading ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        info = self.store.campaign()
        trials = self.store.trials()
        problem = self.protocol.to_problem()
        obs = history.observations(problem, trials)
        best = history.best(problem, obs)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        return {
            "campaign": str(self.store.path),
            "name": info["name"],
            "status": info["status"],
            "stop_reason": info["stop_reason"],
            "trials": len(trials),
            "results": history.n_results(trials),
            "budget": self.protocol.budget.trials,
            "counts": counts,
            "best": None if best is None else {"conditions": best.conditions, "values": best.values},
            "last_events": self.store.events(limit=8),
        }

    # ---- helpers ----------------------------------------------------------------------------------

    def _planner(self) -> Any:
        name, options = planner_spec(self.protocol)
        return make_planner(name, **options)

    def _journal(self, trial_id: int, station: str, direction: str, text: str, t: float) -> None:
        self.store.record_command(trial_id, station, direction, text, virtual_t=t)

    def _confirm_operator_step(self, approver: Approver | None):  # noqa: ANN202
        def confirm(trial_id: int, message: str) -> None:
            ask = getattr(approver, "confirm_step", None)
            if ask is not None:
                ask(trial_id, message)
            self.store.record_event("operator_step", trial_id=trial_id, detail=message)

        return confirm

    def _last_virtual_time(self) -> float:
        events = self.store.events()
        times = [e["virtual_t"] for e in events if e.get("virtual_t") is not None]
        return max(times) if times else 0.0

    @staticmethod
    def _vt(engine: CampaignEngine) -> float | None:
        return engine.clock.now() if engine.clock.virtual else None


__all__ = ["BadInput", "Campaign", "Station"]
