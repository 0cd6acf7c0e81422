"""`closedloop validate --dry-run`: run a whole campaign against the instrument's simulator before any
hardware moves, and say whether it would run safely.

The real path, not a model of it: `Campaign.create` writes a scratch campaign file, `Campaign.run` drives
the real engine, safety gate and driver against the simulator (in process in virtual time, or an
emulator on a pty with `port`), and an operator stand-in accepts every proposal that would need
approval while noting it. Everything in the report is then read back from the scratch file.

    >>> report = dry_run("protocols/serial_furnace.yaml")
    >>> report.exit_code, report.stop_reason, report.instrument
    (0, 'no improvement in the last 8 trials', 'in-process simulator (sim://furnace)')
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.dryrun.checks import (
    Coverage,
    initial_coverage,
    measured_best,
    ramp_seconds,
    setpoint_margins,
)
from closedloop.controller.dryrun.findings import add_warnings, find_problems
from closedloop.controller.dryrun.report import DryRunReport
from closedloop.controller.engine.events import EngineEvent
from closedloop.controller.engine.halts import Halt
from closedloop.controller.engine.operator import Decision
from closedloop.controller.engine.stations import resolve_link
from closedloop.controller.protocol.model import Protocol, load_protocol
from closedloop.controller.protocol.sections import FixedSpec
from closedloop.controller.report.schedule import schedule_of
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_simulate import PyvisaSimFile
from closedloop.planners.space import Conditions

DEFAULT_OPERATOR_STEP_S = 300.0  # assumed operator time per approval or manual step in the wall-time estimate


class DryRunOperator:
    """The operator during a dry run: accepts every proposal that needs approval and confirms every manual
    step at once, keeping a list of both for the report."""

    where = "dry run"

    def __init__(self) -> None:
        self.approvals: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.seen: list[EngineEvent] = []  # every engine event of the run, for the verdict

    def decide(self, trial_id: int, conditions: Conditions, error: str | None = None) -> Decision:
        self.approvals.append({"trial": trial_id, "conditions": dict(conditions)})
        return Decision("accept", note="dry run: accepted automatically")

    def confirm_step(self, trial_id: int, message: str) -> None:
        self.steps.append({"trial": trial_id, "step": message})


def dry_run(
    protocol_path: str | Path,
    *,
    port: str | None = None,
    time_scale: float | None = None,
    seed: int | None = None,
    scratch_dir: str | Path | None = None,
    operator_step_s: float = DEFAULT_OPERATOR_STEP_S,
    report_to: str | Path | None = None,
) -> DryRunReport:
    """Run the protocol's campaign against its simulator and report. `port`: an emulator's device path or
    URL (`closedloop emulate MODEL --pty`) instead of the in-process simulator, with the emulator's
    `time_scale`; `scratch_dir`: keep the campaign file there (default: a temporary folder, deleted);
    `report_to`: write the simulated campaign's HTML report there (its schedule as a Gantt chart).
    Raises `ProtocolError`/`OSError` for a protocol that cannot be read and `InstrumentUnavailable` or
    `BadInput` for an instrument or port that cannot be used (all bad input)."""
    protocol = load_protocol(protocol_path)
    if port is not None:
        _check_port(protocol, port)
    started = time.perf_counter()
    with _scratch_folder(scratch_dir) as folder:
        name = protocol.name
        db = folder / f"{name}-dry-run-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
        link: dict[str, Any] = {} if port is None else {"port": port}
        campaign = Campaign.create(protocol_path, db, seed=seed, sim=port is None, **link)
        operator = DryRunOperator()
        if port is not None:
            link["time_scale"] = time_scale
        try:
            halt = campaign.run(sim=port is None, approver=operator, on_event=operator.seen.append, **link)
            elapsed = time.perf_counter() - started
            where = f"emulator at {port}" if port else f"in-process simulator ({_simulated(campaign.protocol)})"
            report = build_report(
                campaign, operator, halt=halt, instrument=where, scale=time_scale or 1.0,
                wall_s=elapsed, operator_step_s=operator_step_s, keep=scratch_dir is not None,
            )
            if report_to is not None:
                campaign.report(report_to)
            return report
        finally:
            campaign.close()


def _check_port(protocol: Protocol, port: str) -> None:
    if protocol.is_line:
        raise BadInput(f"--port {port}: each step of a workflow has its own connection; set them in the protocol")
    driver = protocol.the_instrument().driver
    if resolve_link(protocol).url is None:
        raise BadInput(f"--port {port}: driver {driver} is a simulator in this process and speaks no wire "
                       "protocol; drop --port")
    if "://" not in port and not Path(port).exists():
        raise BadInput(f"--port {port}: no such device; start the emulator (closedloop emulate MODEL --pty) "
                       "and pass the path it prints")


@contextlib.contextmanager
def _scratch_folder(scratch_dir: str | Path | None) -> Iterator[Path]:
    if scratch_dir is not None:
        path = Path(scratch_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="closedloop-dry-run-") as tmp:
        yield Path(tmp)


def _simulated(protocol: Protocol) -> str:
    """What stands in for the instrument: `sim:NAME`, or the emulator's `sim://NAME`."""
    if protocol.is_line:
        return ", ".join(f"{step.name}: {_simulated(protocol.step_view(step))}" for step in protocol.steps() if step.instrument)
    link = resolve_link(protocol, sim=True)
    if link.url is None:
        return protocol.the_instrument().driver
    section = protocol.the_instrument()
    if isinstance(section, SerialInstrumentConfig) and section.simulate is not None and link.emulator is None:
        written = section.simulate.pyvisa_sim if isinstance(section.simulate, PyvisaSimFile) else ""
        return f"the pyvisa-sim file {written}, {link.url.partition('?')[0]}"
    if isinstance(section, SerialInstrumentConfig) and section.simulate is not None:
        return f"the protocol's own simulate: section, {link.url}"
    cells = getattr(protocol.instrument_options(), "cells", None)
    if cells:  # a sim:// chamber's heaters answer its Modbus cells in process (simulators/modbus_bank.py)
        return f"{link.url}, with Modbus cells {' and '.join(sorted(cells))} simulated in process"
    return link.url


def build_report(
    campaign: Campaign,
    operator: DryRunOperator,
    *,
    halt: Halt,
    instrument: str,
    scale: float,
    wall_s: float,
    operator_step_s: float,
    keep: bool,
) -> DryRunReport:
    """The report, from what the dry run's campaign file holds."""
    store, protocol = campaign.store, campaign.protocol
    trials = store.trials()
    events = store.events()
    commands = store.commands()

    virtual = any(e["virtual_t"] is not None for e in events)

    def when(e: Mapping[str, Any]) -> float:
        # Virtual time when the campaign ran in it; else wall time, scaled to the emulator's time.
        return float(e["virtual_t"]) if virtual else float(e["t"]) * scale

    spans: dict[int, list[float]] = {}
    dispatched: list[tuple[int, str, Mapping[str, Any]]] = []
    by_id = {t.id: t for t in trials}
    for e in events:
        if e["kind"] == "state" and e["to_state"] == "running":
            spans[e["trial_id"]] = [when(e), when(e)]
            t = by_id[e["trial_id"]]
            dispatched.append((t.id, t.instrument or "", protocol.to_instrument_units(dict(t.conditions))))
        elif e["kind"] == "state" and e["trial_id"] in spans and e["to_state"] in ("measured", "failed", "abandoned"):
            spans[e["trial_id"]][1] = when(e)
    instrument_s = sum(end - start for start, end in spans.values())
    # In virtual time the campaign's span is the instrument's makespan (stations run side by side); on a
    # live link the controller's own planning would count at the emulator's pace, so it is left out.
    timed = [when(e) for e in events if e["virtual_t"] is not None]
    campaign_s = max(timed) - min(timed) if virtual else instrument_s
    ramps = ramp_seconds(commands, when)
    first = dispatched[0][0] if dispatched else None
    transcript = [
        {"t_s": when(c) - spans[first][0], "direction": c["direction"], "text": c["text"]}
        for c in commands if first is not None and c["trial_id"] == first
    ]
    states: dict[str, int] = {}
    for t in trials:
        states[t.state] = states.get(t.state, 0) + 1
    operator_s = (len(operator.approvals) + len(operator.steps)) * operator_step_s
    report = DryRunReport(
        protocol=str(protocol.path),
        name=protocol.name,
        seed=campaign.seed,
        instrument=instrument,
        campaign_file=str(store.path) if keep else None,
        stop_reason=halt.text,
        states=states,
        trials=[_trial_row(t, spans.get(t.id)) for t in trials],
        best=_best(protocol, trials),
        instrument_time_s=instrument_s,
        campaign_time_s=campaign_s,
        ramp_time_s=sum(ramps.values()),
        operator_steps=operator.steps,
        approvals=[{**a, "why": _why_approval(campaign, a["conditions"])} for a in operator.approvals],
        operator_step_s=operator_step_s,
        dry_run_wall_s=wall_s,
        spend=campaign.status()["fidelities"],
        wall_time_estimate_s=campaign_s + operator_s + wall_s,
        budget_wall_time_s=protocol.wall_time_s,
        transcript_trial=first,
        transcript=transcript,
        margins=setpoint_margins(protocol.description_of_instrument().envelope.limits, dispatched),
        gate_checks=sum(t.origin != "retry" for t in trials) + len(dispatched),
        coverage=_coverage(protocol, trials, campaign.seed),
        schedule=schedule_of(events, trials, time_scale=scale)[1],
    )
    find_problems(report, protocol, operator.seen, commands, halt)
    add_warnings(report, protocol, campaign.seed, trials, events, ramps, spans, halt)
    return report


def _trial_row(t: Any, span: list[float] | None) -> dict[str, Any]:
    return {
        "trial": t.id, "origin": t.origin, "state": t.state, "conditions": t.conditions, "values": t.values,
        "instrument_s": None if span is None else span[1] - span[0], "detail": t.detail,
    }


def _best(protocol: Protocol, trials: list[Any]) -> dict[str, Any] | None:
    objective = protocol.to_problem().objectives[0]
    found = measured_best(objective, trials)
    return None if found is None else {"objective": objective.name, "value": found[0], "trial": found[1]}


def _coverage(protocol: Protocol, trials: list[Any], seed: int) -> Coverage | None:
    """Coverage of the initial design, once it has all run (a campaign that ended early has no design to judge)."""
    design = [t.conditions for t in trials if t.origin == "initial"]
    if len(design) < protocol.planner.initial.n:
        return None
    return initial_coverage(protocol.to_problem(), design, seed, _pool(protocol))


def _pool(protocol: Protocol) -> list[Conditions] | None:
    table = protocol.candidates_frame()
    if table is None:
        return None
    names = [n for n in protocol.to_problem().space.names if n in table.columns]
    fixed = {n: s.value for n, s in protocol.space.items() if isinstance(s, FixedSpec)}
    return [{**fixed, **{str(k): v for k, v in row.items()}} for row in table[names].to_dict("records")]


def _why_approval(campaign: Campaign, conditions: Conditions) -> str:
    protocol = campaign.protocol
    if protocol.approval_mode == "every":
        return "approval: every"
    outside = [
        f"{name}={value:g} outside {lo:g}..{hi:g}"
        for name, (lo, hi) in protocol.trusted_region_bounds().items()
        if isinstance(value := conditions.get(name), int | float) and not lo <= value <= hi
    ]
    return "outside the trusted region: " + ", ".join(outside)
