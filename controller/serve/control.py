"""What the operator can do from the page, checked before anything is written to the campaign's control file.

`operator_state` reads from the campaign file what waits for the operator (the proposals awaiting a
decision on the dashboard, whether the campaign is paused from it); `control_request` turns a page's
request into a row of the control file (controller.store.control), or refuses it with the reason: the
campaign is not running, the trial is not waiting, an edited value is not a number or is outside the
protocol's space or the instrument's envelope (said per field, so the page shows it next to that field).
The running campaign checks an edit again with its own safety gate: this check only spares the operator
a round trip, it is not what keeps the instrument safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.controller.campaign import Campaign
from closedloop.controller.engine.build import protocol_gate
from closedloop.controller.engine.events import APPROVAL_WAIT, HOLD, RELEASE
from closedloop.controller.engine.gate import EnvelopeViolation, OutsideSpace
from closedloop.controller.protocol.model import Protocol
from closedloop.controller.store.activity import ENGINE_STARTS
from closedloop.controller.store.control import ACTIONS, DECISIONS, Action, ControlChannel, ControlFileError
from closedloop.controller.store.reads import CampaignReads
from closedloop.planners.space import ChoiceParameter, FloatParameter, IntParameter, Parameter
from closedloop.records import Conditions, Value

WHOLE = "_"  # the key of an edit error that belongs to no single field (a constraint between them)


class Refused(Exception):
    """A control request the page must not make now. `status`: the HTTP status to answer with;
    `fields`: per-field errors of an edit."""

    def __init__(self, status: int, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or {}


@dataclass(frozen=True)
class PendingApproval:
    trial_id: int
    conditions: Conditions
    where: str  # "dashboard", "terminal": only the dashboard's can be decided from the page
    refusal: str | None
    since: float

    def as_json(self) -> dict[str, Any]:
        return {"trial": self.trial_id, "conditions": self.conditions, "where": self.where,
                "refusal": self.refusal, "since": self.since}


def pending_approvals(store: CampaignReads) -> list[PendingApproval]:
    """The proposals waiting for an operator's decision now: trials still proposed whose last approval
    event is a wait."""
    out = []
    for trial in store.trials(states=["proposed"]):
        events = store.events(trial_id=trial.id, kinds=[APPROVAL_WAIT, "approval"], limit=1)
        if events and events[0]["kind"] == APPROVAL_WAIT:
            data = events[0]["data"] or {}
            out.append(PendingApproval(trial.id, dict(trial.conditions), str(data.get("where", "")),
                                       data.get("refusal"), float(events[0]["t"])))
    return out


def held_by(store: CampaignReads) -> str | None:
    """Who paused the campaign from the dashboard in its current run, or None."""
    last = store.events(kinds=[HOLD, RELEASE, *ENGINE_STARTS], limit=1)
    return str((last[0]["data"] or {}).get("by", "")) if last and last[0]["kind"] == HOLD else None


def operator_state(campaign: Campaign, running: bool) -> dict[str, Any]:
    """The page's operator panel: what waits for a decision, whether the campaign is paused, the parameters
    an edit form needs, and the last requests with their outcomes."""
    store = campaign.store
    return {
        "running": running,
        "pending": [p.as_json() for p in pending_approvals(store)] if running else [],
        "held_by": held_by(store) if running else None,
        "parameters": [_describe(p, campaign.protocol) for p in campaign.protocol.to_problem().space.parameters],
        **_requests(store.path),
    }


def _requests(path: Path) -> dict[str, Any]:
    """The last requests with their outcomes; a control file that cannot be read is said, not a 500."""
    try:
        return {"requests": [r.as_json() for r in ControlChannel(path).recent(10)], "control_error": None}
    except ControlFileError as exc:
        return {"requests": [], "control_error": str(exc)}


def control_request(path: Path, body: Any, by: str) -> int:
    """Check a page's request (`{"action", "trial", "values"}`) against the running campaign and write it to
    the control file; the request's id. Raises `Refused`."""
    if not isinstance(body, dict) or body.get("action") not in ACTIONS:
        raise Refused(400, f"the request needs an action: one of {', '.join(ACTIONS)}")
    action: Action = body["action"]
    with Campaign.open(path) as campaign:
        if campaign.store.activity().writer.alive is not True:
            raise Refused(409, f"the campaign is not running: nothing reads requests now. Continue it with "
                               f"`closedloop resume {path}` (with --approve-from dashboard to decide here)")
        if action not in DECISIONS:
            return ControlChannel(path).submit(action, by)
        trial_id = body.get("trial")
        waiting = {p.trial_id: p for p in pending_approvals(campaign.store)}
        if not isinstance(trial_id, int) or trial_id not in waiting:
            raise Refused(409, f"trial {trial_id} is not waiting for a decision")
        if waiting[trial_id].where != "dashboard":
            raise Refused(409, f"trial {trial_id} waits for a decision at the {waiting[trial_id].where}, not here")
        edited = None
        if action == "edit":
            edited = check_edit(campaign.protocol, waiting[trial_id].conditions, body.get("values"))
        return ControlChannel(path).submit(action, by, trial_id=trial_id, edited=edited)


def check_edit(protocol: Protocol, proposed: Conditions, values: Any) -> dict[str, Value]:
    """The edited values (as typed on the page) in the parameters' types, checked against the protocol's
    space and the instrument's envelope; `Refused` (422) with an error per field otherwise. Only values
    that differ from the proposal are kept."""
    if not isinstance(values, dict) or not values:
        raise Refused(422, "an edit needs the new values", {WHOLE: "change at least one value"})
    space = protocol.to_problem().space
    errors: dict[str, str] = {}
    edited: dict[str, Value] = {}
    for name, text in values.items():
        try:
            parameter = space.parameter(str(name))
        except KeyError:
            errors[str(name)] = "not a parameter of this protocol"
            continue
        try:
            value = _coerce(parameter, str(text).strip())
        except ValueError as exc:
            errors[str(name)] = str(exc)
            continue
        if value != proposed.get(parameter.name):
            edited[parameter.name] = value
    if not errors and not edited:
        errors[WHOLE] = "nothing was changed: accept the proposal instead"
    gate = protocol_gate(protocol)
    for name, value in edited.items():  # each alone, so an error stands next to the field that causes it
        try:
            gate.check({**proposed, name: value})
        except (OutsideSpace, EnvelopeViolation) as exc:
            errors[name] = str(exc)
    if not errors:
        try:
            gate.check({**proposed, **edited})
        except (OutsideSpace, EnvelopeViolation) as exc:
            errors[WHOLE] = str(exc)
    if errors:
        raise Refused(422, "the edit was not accepted", errors)
    return edited


def _coerce(parameter: Parameter, text: str) -> Value:
    if isinstance(parameter, ChoiceParameter):
        if text not in parameter.values:
            raise ValueError(f"one of {', '.join(map(str, parameter.values))}")
        return text
    if isinstance(parameter, IntParameter):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"a whole number, not {text!r}") from None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"a number, not {text!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"a finite number, not {text!r}")
    return number


def _describe(parameter: Parameter, protocol: Protocol) -> dict[str, Any]:
    unit = protocol.parameter_units().get(parameter.name, "")
    if isinstance(parameter, FloatParameter | IntParameter):
        return {"name": parameter.name, "kind": "int" if isinstance(parameter, IntParameter) else "float",
                "low": parameter.low, "high": parameter.high, "unit": unit}
    if isinstance(parameter, ChoiceParameter):
        return {"name": parameter.name, "kind": "choice", "values": list(parameter.values), "unit": unit}
    return {"name": parameter.name, "kind": "fixed", "unit": unit}
