"""The campaign engine: propose, gate, approve, dispatch, ingest, reconcile, stop.

`build_engine` makes one from a protocol and a campaign file, with its stations, safety gate, planner and
clock passed in; every entry point (run, resume, ask/tell, dry run, audit, counterfactuals) drives it.
Each step is a typed event written to the campaign file and passed to subscribers; `run` returns a
`Halt` saying why it stopped or paused.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module. Loaded on first use: `closedloop status` reads a campaign through engine.history and
# must not import the planners, simulators and drivers that building an engine needs.
_PUBLIC = {
    "Approver": "closedloop.controller.engine.operator",
    "CampaignEngine": "closedloop.controller.engine.engine",
    "Decision": "closedloop.controller.engine.operator",
    "EngineEvent": "closedloop.controller.engine.events",
    "EngineSettings": "closedloop.controller.engine.engine",
    "EventLog": "closedloop.controller.engine.events",
    "Halt": "closedloop.controller.engine.halts",
    "HaltKind": "closedloop.controller.engine.halts",
    "InstrumentUnavailable": "closedloop.controller.engine.stations",
    "OperatorAbsent": "closedloop.controller.engine.operator",
    "OutsideSpace": "closedloop.controller.engine.gate",
    "SafetyGate": "closedloop.controller.engine.gate",
    "Station": "closedloop.controller.engine.dispatch",
    "Subscriber": "closedloop.controller.engine.events",
    "build_engine": "closedloop.controller.engine.build",
    "make_stations": "closedloop.controller.engine.stations",
    "planner_spec": "closedloop.controller.engine.build",
    "settings_from": "closedloop.controller.engine.build",
}

if TYPE_CHECKING:
    from closedloop.controller.engine.build import build_engine, planner_spec, settings_from
    from closedloop.controller.engine.dispatch import Station
    from closedloop.controller.engine.engine import CampaignEngine, EngineSettings
    from closedloop.controller.engine.events import EngineEvent, EventLog, Subscriber
    from closedloop.controller.engine.gate import OutsideSpace, SafetyGate
    from closedloop.controller.engine.halts import Halt, HaltKind
    from closedloop.controller.engine.operator import Approver, Decision, OperatorAbsent
    from closedloop.controller.engine.stations import InstrumentUnavailable, make_stations


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Approver",
    "CampaignEngine",
    "Decision",
    "EngineEvent",
    "EngineSettings",
    "EventLog",
    "Halt",
    "HaltKind",
    "InstrumentUnavailable",
    "OperatorAbsent",
    "OutsideSpace",
    "SafetyGate",
    "Station",
    "Subscriber",
    "build_engine",
    "make_stations",
    "planner_spec",
    "settings_from",
]
