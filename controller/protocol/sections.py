"""The sections of a protocol file as pydantic models: parameters, objectives, planner, budget, ...

Every section forbids unknown keys (reported with a "did you mean"), converts quantities written
with a unit ("500 nm", "2 h") into the unit the field declares, and checks what it can check alone
(bounds ordered, step dividing the range, log scale with positive bounds). Checks that need several
sections (constraints, envelopes, budgets) live in `controller.protocol.model` and `controller.protocol.validate`.

The instrument sections of `driver: serial` and `driver: manual` are not defined here: each driver owns
what it accepts, so its model (`drivers.serial_config.SerialInstrumentConfig`,
`drivers.manual.ManualInstrumentConfig`) validates that section directly.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from closedloop.controller.protocol.catalog import SIM, check_driver_name
from closedloop.drivers.manual import ManualInstrumentConfig
from closedloop.drivers.options import Strict, located
from closedloop.drivers.registry import DRIVERS
from closedloop.drivers.serial_config import SERIAL_KEYS, SerialInstrumentConfig, check_connection
from closedloop.planners.space import ChoiceParameter, FixedParameter, FloatParameter, IntParameter, Parameter
from closedloop.units import UnitError, parse_duration_s, parse_quantity_to, parse_unit

_NUMBER_WITH_UNIT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*[^\s\d.]")


# Every section refuses unknown keys and never changes once read; a model validator's problem with one of
# the section's own keys is raised with `problem_at`, which names that key so the error points at it.
Section = Strict
problem_at = located


def _duration(value: Any) -> float:
    try:
        return parse_duration_s(value)
    except UnitError as e:
        raise ValueError(str(e)) from None


Duration = Annotated[float, BeforeValidator(_duration)]


def as_text(value: Any) -> Any:
    """Numbers written where text is expected (a version "2", a label) are kept as their text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(as_text)]


def _quantity_in_field_unit(value: Any, info: ValidationInfo) -> Any:
    """Numbers and "10 unit" strings in the unit declared by the model's `unit` key (declared first)."""
    if "unit" not in info.data:
        return 0.0  # the unit itself is invalid and already reported; no conversion is meaningful
    if isinstance(value, str | bool | int | float):
        try:
            number = parse_quantity_to(value, info.data["unit"])
        except UnitError as e:
            raise ValueError(str(e)) from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    return value


InUnit = Annotated[float, BeforeValidator(_quantity_in_field_unit)]
IntInUnit = Annotated[int, BeforeValidator(_quantity_in_field_unit)]


def _known_unit(unit: str | None) -> str | None:
    if unit is None:
        return None
    try:
        parse_unit(unit)
    except UnitError as e:
        raise ValueError(str(e)) from None
    return unit.strip()


class _Unit(Section):
    """A section whose numbers are in `unit` ("" = dimensionless); `unit` must be declared first."""

    unit: Annotated[str, AfterValidator(_known_unit)] = ""


def _ordered_bounds(low: float, high: float) -> None:
    if low > high:
        raise problem_at("low", f"low ({low}) is above high ({high}); swap them")
    if low == high:
        raise problem_at("high", f"low and high are both {low}; use type: fixed for a constant")


class FloatSpec(_Unit):
    type: Literal["float"]
    low: InUnit
    high: InUnit
    log: bool = False  # search uniformly in log10: the parameter spans decades

    @model_validator(mode="after")
    def _valid_range(self) -> FloatSpec:
        _ordered_bounds(self.low, self.high)
        if self.log and self.low <= 0:
            raise problem_at("low", f"a log-scale parameter needs low > 0, got {self.low}; set log: false or raise low")
        return self

    def to_parameter(self, name: str) -> Parameter:
        return FloatParameter(name, self.low, self.high, self.log)


class IntSpec(_Unit):
    type: Literal["int"]
    low: IntInUnit
    high: IntInUnit
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _valid_range(self) -> IntSpec:
        _ordered_bounds(self.low, self.high)
        span = self.high - self.low
        if span % self.step:
            fitted = self.low + (span // self.step) * self.step
            raise problem_at("step", f"step {self.step} does not divide high - low = {span}; use high: {fitted}")
        return self

    def to_parameter(self, name: str) -> Parameter:
        return IntParameter(name, self.low, self.high, self.step)


class ChoiceSpec(Section):
    type: Literal["choice"]
    values: list[Text] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceSpec:
        for i, value in enumerate(self.values):
            if value in self.values[:i]:
                raise problem_at(("values", i), f"value {value!r} is listed twice")
        return self

    def to_parameter(self, name: str) -> Parameter:
        return ChoiceParameter(name, tuple(self.values))


class FixedSpec(_Unit):
    type: Literal["fixed"]
    value: float | str

    @field_validator("value", mode="before")
    @classmethod
    def _number_or_label(cls, value: Any, info: ValidationInfo) -> Any:
        # "25 degC" is a quantity, "chloroform" a label sent as is.
        if isinstance(value, str) and not _NUMBER_WITH_UNIT.match(value):
            return value
        return _quantity_in_field_unit(value, info)

    def to_parameter(self, name: str) -> Parameter:
        return FixedParameter(name, self.value)


ParameterSpec = Annotated[FloatSpec | IntSpec | ChoiceSpec | FixedSpec, Field(discriminator="type")]

# The planner fits one Gaussian process over every parameter (a choice adds one column per value). Such
# models are used up to about 20 dimensions; past a few dozen, a budget of tens of trials learns little
# more than random search would, and the high-dimensional methods made for hundreds (SAASBO, trust
# regions) are not what `planners` ships. 50 leaves room for any real campaign.
MAX_PARAMETERS = 50


def at_most_max_parameters(space: Any) -> Any:
    """Refuse a space too large for the planner before its parameters are read one by one."""
    if isinstance(space, dict) and len(space) > MAX_PARAMETERS:
        raise ValueError(f"{len(space)} parameters; a protocol may search at most {MAX_PARAMETERS} (a GP planner "
                         "learns little in more dimensions): fix some with type: fixed, or split the campaign")
    return space


class ObjectiveSpec(_Unit):
    direction: Literal["maximize", "minimize"]
    log: bool = False  # model log10 of the value: it spans decades
    target: InUnit | None = None  # reaching it counts as done (stop.target_reached)

    @model_validator(mode="after")
    def _log_target_positive(self) -> ObjectiveSpec:
        if self.log and self.target is not None and self.target <= 0:
            raise problem_at("target", f"a log-scale objective needs a positive target, got {self.target}")
        return self


class CandidatesSpec(Section):
    """Pool mode: the planner may only choose rows of this CSV table."""

    path: str  # relative to the protocol file
    # Parameter or objective name -> CSV header, for headers that differ from the names in the protocol.
    columns: dict[str, str] = Field(default_factory=dict)


class InitialDesign(Section):
    method: Literal["sobol", "random"] = "sobol"
    n: int = Field(5, ge=1)


class PlannerSection(Section):
    initial: InitialDesign = InitialDesign()
    batch_size: int = Field(1, ge=1)
    acquisition: Literal["auto", "qLogNEI", "qLogNEHVI", "random"] = "auto"
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)  # checked by the planner's model, planners.options

    @property
    def planner_name(self) -> str:
        """The planner that runs the campaign: BoTorch, or random points with `acquisition: random`."""
        return "random" if self.acquisition == "random" else "botorch"


class BudgetSection(Section):
    trials: int = Field(ge=1)
    wall_time: Duration | None = None
    # Instrument time: each trial counted at its fidelity's declared cost (protocols with `fidelities:`).
    instrument_time: Duration | None = Field(None, gt=0)


class StopSection(Section):
    no_improvement: int | None = Field(None, ge=1)  # stop after this many trials without a better result
    target_reached: bool = True  # stop once every objective with a target has reached it


class FailuresSection(Section):
    instrument_fault_retries: int = Field(2, ge=0)
    on_fault: Literal["pause", "continue", "stop"] = "pause"  # after the retries are used up
    failed_samples: Literal["keep"] = "keep"  # failed samples are data for the planner, never dropped


class TrustedRange(Section):
    """Part of a parameter's range inside which proposals run without asking the operator."""

    low: float | str  # a number in the parameter's unit, or a quantity such as "150 degC"
    high: float | str


class ApprovalSection(Section):
    """When the operator must approve a proposal before it is sent. Shorthand: `approval: every`."""

    mode: Literal["none", "every", "outside_region"] = "none"
    trusted_region: dict[str, TrustedRange] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _region_when_needed(self) -> ApprovalSection:
        if self.mode == "outside_region" and not self.trusted_region:
            raise problem_at("mode", "outside_region needs a trusted_region: {PARAMETER: {low: ..., high: ...}}")
        return self


def is_identifier(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None


# --- The instrument section: `driver: serial` is described by the serial driver's own model. ---


def _known_driver(driver: Any) -> Any:
    if isinstance(driver, str):
        check_driver_name(driver)
    return driver


class DeclaredInstrumentSection(Section):
    """The instrument section of a driver that declares what it accepts in code (trmc, mbe, sim:MODEL):
    which driver, where it is, and its options. `driver: serial` has the serial driver's own model."""

    driver: str
    connection: str | None = None  # pyserial URL or device path; sim://MODEL for a simulator
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_serial_keys(cls, data: Any) -> Any:
        keys = [key for key in data if key in SERIAL_KEYS] if isinstance(data, dict) else []
        if keys:
            # A misnamed driver is the likelier mistake (sim:furnace for serial): name it first.
            try:
                _known_driver(data.get("driver"))
            except ValueError as e:
                raise problem_at("driver", str(e)) from None
            raise problem_at(keys[0], f"'{keys[0]}' describes a generic serial instrument; it is only for driver: serial")
        return data

    @field_validator("driver")
    @classmethod
    def _driver_is_known(cls, driver: str) -> str:
        return _known_driver(driver)

    @field_validator("connection")
    @classmethod
    def _connection_url(cls, url: str | None) -> str | None:
        return None if url is None else check_connection(url)

    @model_validator(mode="after")
    def _connection_unless_simulated(self) -> DeclaredInstrumentSection:
        if self.connection is None and not self.driver.startswith(SIM):
            raise problem_at("connection", f"driver {self.driver} needs a connection (a device path or URL)")
        return self


SectionModels = (SerialInstrumentConfig, ManualInstrumentConfig, DeclaredInstrumentSection)


def _instrument_kind(section: Any) -> str:
    if isinstance(section, dict):
        driver = section.get("driver")
    else:
        driver = section.driver if isinstance(section, SectionModels) else None
    entry = DRIVERS.get(driver) if isinstance(driver, str) else None
    # A driver described in the protocol (serial, manual) validates the whole section with its own model.
    return entry.config.__name__ if entry is not None and entry.section else DeclaredInstrumentSection.__name__


# The `instrument` key of a protocol: the driver's own model for a driver described in the protocol
# (`driver: serial`, `driver: manual`), else the declared one. Tags are the class names: they never collide
# with a key of the file (so error locations skip them), and `controller.protocol.yaml_source` finds the
# member by its name to suggest keys for a misspelled one.
InstrumentSection = Annotated[
    Annotated[SerialInstrumentConfig, Tag(SerialInstrumentConfig.__name__)]
    | Annotated[ManualInstrumentConfig, Tag(ManualInstrumentConfig.__name__)]
    | Annotated[DeclaredInstrumentSection, Tag(DeclaredInstrumentSection.__name__)],
    Discriminator(_instrument_kind),
]
