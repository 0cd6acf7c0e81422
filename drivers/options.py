"""How a driver says what it accepts from a protocol: strict pydantic models, with quantities in units.

A driver's options model (`TrmcOptions`, `MbeOptions`, the serial driver's whole section) is what
`closedloop validate` checks, each error located at FILE:LINE:COL, and what the driver is built from, so
a value that validates is a value the driver can run with.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from closedloop.units import UnitError, duration_seconds, parse_quantity_to


class Strict(BaseModel):
    """Unknown keys are refused (with the known ones listed), and a model never changes once built.
    Float fields refuse inf and NaN: a limit of `.inf` or `.nan` compares as no limit at all."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DriverOptions(Strict):
    """Base of every driver's `instrument.options` model."""


def located(path: str | tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error about one of the model's own keys (`path`, relative to the model), for model validators."""
    return PydanticCustomError("located", "{message}", {"message": message, "at": path})


def _seconds(value: Any) -> float:
    try:
        return duration_seconds(value)
    except UnitError as e:
        raise ValueError(str(e)) from None


# A duration: "2 s", "10 min", "2 h", or a bare number of seconds.
Duration = Annotated[float, BeforeValidator(_seconds)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


def quantity_in(unit: str) -> Any:
    """A float field in `unit` that also takes a quantity with its own unit ("500 nm", "1e14 1/cm^2")."""

    def parse(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return value  # pydantic reports the wrong type itself
        try:
            return parse_quantity_to(value, unit)
        except UnitError as e:
            raise ValueError(str(e)) from None

    return Annotated[float, BeforeValidator(parse), AfterValidator(_finite)]
