"""A manual instrument: a person runs each trial and types what they measured (see
protocols/manual_spin_coating.yaml). This module declares what the protocol writes for it and what it
measures; drivers/manual_driver.py asks the operator.

    instrument:
      driver: manual
      measures: {roughness: nm, thickness: nm}     # each measured value with its unit
      instructions: spin-coat, anneal, then AFM     # optional: shown with every trial's conditions

There is no connection and no envelope of hard limits: nothing is sent to a machine. The person is shown
each trial's conditions, which the protocol's space bounds; the envelope the description carries names
those parameters (and the labels of a choice) so the safety gate and the driver refuse anything else.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator

from closedloop.drivers.base import DriverDescription, SafetyEnvelope
from closedloop.drivers.options import Strict
from closedloop.units import UnitError, parse_unit

MANUAL = "manual"  # the name protocols write in `instrument.driver`


def _unit(value: Any) -> Any:
    """A measured value's unit: "nm", "cm^2/(V*s)", or "" (or nothing) for a plain number."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            parse_unit(value)
        except UnitError as e:
            raise ValueError(str(e)) from None
    return value


Unit = Annotated[str, BeforeValidator(_unit)]


class ManualInstrumentConfig(Strict):
    """The whole `instrument` section for `driver: manual`."""

    driver: Literal["manual"] = "manual"
    # Checked even when left out, so a missing section gets the message below rather than "missing".
    measures: dict[str, Unit] = Field(default_factory=dict, validate_default=True)
    instructions: str = ""
    # Engine-level settings shared by every driver; the manual driver reads none of them.
    options: dict[str, Any] = {}
    # Declared so that a connection gets a message saying why there is none (see `_no_connection`).
    connection: str | None = None

    # What the person is shown (the protocol's parameters, in its units): filled in by the controller from
    # the protocol's space (`accepting`), never written in a protocol.
    _accepts: SafetyEnvelope = PrivateAttr(default_factory=SafetyEnvelope)
    # Measured values the planner models on a log scale (log: true), which only a value > 0 can be: filled
    # in by the controller from the protocol's objectives, so the prompt asks again rather than store one
    # `tell` would refuse.
    _positive: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("measures")
    @classmethod
    def _measures_something(cls, measures: dict[str, str]) -> dict[str, str]:
        if not measures:
            raise ValueError("a manual instrument needs the values the person measures, each with its unit, "
                             "e.g. measures: {roughness: nm, thickness: nm}")
        for name in measures:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None:
                raise ValueError(f"{name!r} is not a valid name for a measured value: use letters, digits and _ (not first)")
        return measures

    @field_validator("connection", mode="before")
    @classmethod
    def _no_connection(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("a manual instrument is a person at the terminal, with nothing to connect to; "
                             "remove connection")
        return value

    def accepting(self, envelope: SafetyEnvelope, positive: frozenset[str] = frozenset()) -> ManualInstrumentConfig:
        """This section, saying which parameters (and units) the person is shown (the protocol's space) and
        which measured values must be > 0 (`positive`: those modelled on a log scale)."""
        config = self.model_copy()
        config._accepts = envelope
        config._positive = positive
        return config

    @property
    def positive(self) -> frozenset[str]:
        return self._positive

    def describe(self) -> DriverDescription:
        return DriverDescription(name=MANUAL, envelope=self._accepts, measures=dict(self.measures), by_hand=True)


__all__ = ["MANUAL", "ManualInstrumentConfig"]
