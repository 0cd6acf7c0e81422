"""The safety gate between planner and instrument: every proposal is checked against the search space
and the instrument's declared envelope before it is stored as dispatchable, and again at dispatch
against the station's last setpoints (step limits). Refused, never clamped."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from closedloop.drivers.base import EnvelopeViolation, SafetyEnvelope, Value
from closedloop.planners.space import Conditions, SearchSpace


class OutsideSpace(ValueError):
    """Conditions that the protocol's search space does not allow (bounds, grid, constraints)."""


class SafetyGate:
    def __init__(
        self,
        space: SearchSpace,
        envelope: SafetyEnvelope,
        to_instrument_units: Callable[[Conditions], dict[str, Value]],
    ) -> None:
        self.space = space
        self.envelope = envelope
        self.to_instrument_units = to_instrument_units

    def check(self, conditions: Conditions, previous: Mapping[str, Value] | None = None) -> dict[str, Value]:
        """Return the conditions in instrument units, or raise OutsideSpace / EnvelopeViolation."""
        if not self.space.contains(conditions):
            bad = sorted(set(conditions) ^ set(self.space.names)) or [
                f"{k}={v!r}" for k, v in conditions.items() if not self._param_ok(k, v)
            ]
            raise OutsideSpace(f"conditions outside the protocol's space: {', '.join(bad) or 'a constraint'}")
        sent = self.to_instrument_units(conditions)
        self.envelope.check(sent, previous)
        return sent

    def _param_ok(self, name: str, value: Value) -> bool:
        try:
            p = self.space.parameter(name)
        except KeyError:
            return False
        probe = SearchSpace((p,))
        return probe.contains({name: value})


__all__ = ["EnvelopeViolation", "OutsideSpace", "SafetyGate"]
