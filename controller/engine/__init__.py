"""The campaign engine: propose, gate, approve, dispatch, ingest, reconcile, stop.

`build_engine` makes one from a protocol and a campaign file, with its stations, safety gate, planner and
clock passed in; every entry point (run, resume, ask/tell, dry run, audit, counterfactuals) drives it.
Each step is a typed event written to the campaign file and passed to subscribers; `run` returns a
`Halt` saying why it stopped or paused.
"""

from closedloop.controller.engine.build import build_engine, planner_spec, settings_from
from closedloop.controller.engine.dispatch import Station
from closedloop.controller.engine.engine import CampaignEngine, EngineSettings
from closedloop.controller.engine.events import EngineEvent, EventLog, Subscriber
from closedloop.controller.engine.gate import OutsideSpace, SafetyGate
from closedloop.controller.engine.halts import Halt, HaltKind
from closedloop.controller.engine.operator import Approver, Decision, OperatorAbsent
from closedloop.controller.engine.stations import InstrumentUnavailable, make_stations

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
