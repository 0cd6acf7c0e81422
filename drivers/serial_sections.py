"""The parts of a serial instrument's description (see `drivers.serial_config`): line settings,
identification, set commands, waiting, measuring, and the envelope. Strict pydantic models: unknown keys
are refused, durations and limits may carry units ("2 s", "450 degC"), and each error says what to write.

A problem a model validator finds in one of its own keys is raised by `located`, which names that key in
the error's context (`ctx["at"]`), so a tool that maps errors to source lines points at the key rather
than at the section holding it.
"""

from __future__ import annotations

import codecs
import re
import string
from difflib import get_close_matches
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from closedloop.drivers.base import Limit
from closedloop.drivers.options import Duration, Strict, located
from closedloop.drivers.transport import TransportSettings
from closedloop.units import UnitError, convert, parse_unit

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


Commands = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
SAMPLE_FIELD = "sample"  # `{sample}` in a `start` or `set` template: the trial id (the sample's label)


def _template_fields(template: str, example: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"{template!r} is not a valid command template ({e}); write e.g. {example!r}") from None


def _start_template(template: str) -> str:
    unknown = [f for f in _template_fields(template, "SAMP:ID {sample}") if f != SAMPLE_FIELD]
    if unknown:
        raise ValueError(
            f"{template!r}: unknown placeholder {{{unknown[0]}}}; a start command may use {{sample}} (the trial "
            "id, the label of the sample on the instrument); write a literal brace as {{ or }}"
        )
    try:
        template.format(sample=1)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{template!r}: bad format spec ({e}); write e.g. 'SAMP:ID {{sample}}'") from None
    return template


# Start commands are templates: `{sample}` is filled with the trial id, `{{`/`}}` are literal braces.
StartCommands = Annotated[list[Annotated[str, AfterValidator(_start_template)]],
                          BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]
# Labels written as numbers in YAML (a gas line "2") are still labels.
Label = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)]


def _check_unit(unit: str) -> str:
    try:
        parse_unit(unit)
    except UnitError as e:
        raise ValueError(str(e)) from None
    return unit


def check_regex(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression: {e}") from None


def _stop_bits(value: float) -> float:
    if value not in (1, 1.5, 2):
        raise ValueError(f"{value!r} is not allowed; use one of: 1, 1.5, 2")
    return value


StopBits = Annotated[float, AfterValidator(_stop_bits)]


class SerialSettings(Strict):
    """Line settings. `terminator` sets both directions unless `read_terminator`/`write_terminator` do."""

    baudrate: int = Field(9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: StopBits = 1
    xonxoff: bool = False
    rtscts: bool = False
    encoding: str = "ascii"
    terminator: str = "\n"
    read_terminator: str | None = None
    write_terminator: str | None = None
    timeout: Duration = 2.0
    write_timeout: Duration = 2.0
    retries: int = Field(2, ge=0, le=10, description="extra attempts for queries; sets/starts are never re-sent")
    retry_backoff: Duration = 0.05
    reconnect_attempts: int = Field(3, ge=1, le=20)
    reconnect_backoff: Duration = 0.2
    echo: bool = Field(False, description="the instrument echoes each command before replying")

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_letter(cls, value: Any) -> Any:
        # pyserial and instrument manuals write parity as one letter: N, E, O, M, S.
        letters = {"N": "none", "E": "even", "O": "odd", "M": "mark", "S": "space"}
        return letters.get(value.upper(), value) if isinstance(value, str) and len(value) == 1 else value

    @field_validator("terminator", "read_terminator", "write_terminator", mode="before")
    @classmethod
    def _unescape(cls, value: Any) -> Any:
        # '\r\n' in single quotes (or a plain scalar) reaches us as backslash escapes; users mean CR LF.
        if isinstance(value, str) and "\\" in value:
            try:
                value = codecs.decode(value, "unicode_escape")
            except UnicodeDecodeError as e:
                raise ValueError(f"terminator {value!r}: bad escape ({e}); write e.g. \"\\r\\n\"") from None
        if isinstance(value, str) and not value:
            raise ValueError('a terminator cannot be empty; write e.g. "\\n" or "\\r\\n"')
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; use ascii, latin-1 or utf-8") from None
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the read timeout must be longer than 0 s, e.g. '2 s'")
        return value

    def to_transport(self) -> TransportSettings:
        return TransportSettings(
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity[0].upper(),
            stopbits=self.stopbits,
            xonxoff=self.xonxoff,
            rtscts=self.rtscts,
            encoding=self.encoding,
            read_terminator=self.read_terminator or self.terminator,
            write_terminator=self.write_terminator or self.terminator,
            timeout=self.timeout,
            write_timeout=self.write_timeout,
            retries=self.retries,
            retry_backoff=self.retry_backoff,
            reconnect_attempts=self.reconnect_attempts,
            reconnect_backoff=self.reconnect_backoff,
            echo=self.echo,
        )


class Identify(Strict):
    query: str = "*IDN?"
    expect: str | None = Field(None, description="regular expression the reply must match")

    @field_validator("expect")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            check_regex(value, "identify.expect")
        return value


class SetCommand(Strict):
    """How one parameter is sent: a format template with a `{value}` field, in `unit` on the wire; it may
    also carry `{sample}`, the trial id (an instrument that keeps settings per sample)."""

    command: str
    unit: str | None = None

    @field_validator("command")
    @classmethod
    def _template(cls, template: str) -> str:
        fields = _template_fields(template, "SOUR:TEMP {value:.1f}")
        if [f for f in fields if f != SAMPLE_FIELD] != ["value"]:
            raise ValueError(
                f"{template!r} must contain exactly one '{{value}}' field (optionally formatted, e.g. "
                f"'{{value:.1f}}') and no other placeholder than {{sample}}, found {fields or 'none'}"
            )
        try:
            template.format(value=1.5, sample=1)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{template!r}: bad format spec ({e}); use e.g. {{value:.2f}} or {{value:.0f}}") from None
        return template

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        return None if value is None else _check_unit(value)


class WaitSpec(Strict):
    """How to wait for the instrument: poll a query until a regex matches, or a fixed duration, or as long
    as a set parameter says (e.g. the dwell time); `delay` is a fixed wait before any of them (or alone)."""

    query: str | None = None
    until: str | None = None
    poll: Duration = 1.0
    timeout: Duration | None = None
    duration: Duration | None = None
    duration_from: str | None = None
    delay: Duration = 0.0

    @field_validator("until")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            check_regex(value, "wait.until")
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> WaitSpec:
        modes = [m for m, on in (("query", self.query), ("duration", self.duration is not None),
                                 ("duration_from", self.duration_from)) if on]
        if len(modes) > 1 or (not modes and not self.delay):
            raise ValueError(
                "wait needs exactly one of: {query: ..., until: ..., poll: ..., timeout: ...}, "
                f"{{duration: 10 min}} or {{duration_from: PARAMETER}} (optionally after a fixed `delay`); got {modes or 'none'}"
            )
        if self.query is not None:
            if self.until is None or self.timeout is None:
                if self.until is None:
                    raise located("until", "a polling wait needs `until`: a regex the reply must match, e.g. '^IDLE'")
                raise located("timeout", "a polling wait needs `timeout`: how long to poll before calling it a fault, e.g. 2 h")
            if self.poll <= 0:
                raise located("poll", "wait.poll must be longer than 0 s, e.g. '1 s'")
        elif self.until is not None or self.timeout is not None:
            raise located("until" if self.until is not None else "timeout", "`until` and `timeout` belong to a polling wait (with `query`)")
        return self


class MeasureSpec(Strict):
    """One measured quantity: the query, how to parse the reply, and its unit.

    parse: float (one number), int (one whole number), list (comma-separated numbers, reduced by `reduce`),
    regex (group 1 of `pattern`), block (IEEE-488.2 binary block of `dtype` values, reduced by `reduce`).
    float and int also take a `pattern` when the number sits inside other text. Lists and blocks are also
    kept whole as an artifact.
    """

    query: str
    parse: Literal["float", "int", "list", "regex", "block"] = "float"
    unit: str = ""
    pattern: str | None = None
    reduce: Literal["mean", "median", "min", "max", "first", "last"] = "mean"
    dtype: str = "<f4"

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        return _check_unit(value)

    @field_validator("pattern")
    @classmethod
    def _group_around_the_number(cls, value: str | None) -> str | None:
        if value is not None and check_regex(value, "pattern").groups < 1:
            raise ValueError(f"pattern {value!r} needs a group ( ) around the number, e.g. 'R=([-+.0-9eE]+)'")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        try:
            kind = np.dtype(value)
        except TypeError:
            raise ValueError(f"unknown binary dtype {value!r}; use e.g. '<f4', '>f8', '<i2'") from None
        if kind.kind not in "fiu":
            raise ValueError(f"dtype {value!r} is not numeric; use e.g. '<f4', '>f8', '<i2'")
        return value

    @model_validator(mode="after")
    def _pattern_for_regex(self) -> MeasureSpec:
        if self.parse == "regex" and self.pattern is None:
            raise ValueError("parse: regex needs a `pattern` whose group 1 captures the number, e.g. 'R=([-+.0-9eE]+)'")
        if self.parse in ("list", "block") and self.pattern is not None:
            raise located("pattern", f"`pattern` picks one number out of a text reply; it cannot be used with parse: {self.parse}")
        return self


def _limit_in_unit(value: Any, info: ValidationInfo) -> Any:
    """A limit written as a quantity ("450 degC") in the limit's `unit`; plain numbers are in it already.
    A step is a difference, so an offset between units (degC vs K) does not apply to it."""
    if not isinstance(value, str):
        return value
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"expected a number or a quantity such as '450 degC', got {value!r}")
    number, written = float(match.group(1)), match.group(2)
    if not written:
        return number
    if "unit" not in info.data:
        return number  # the unit itself is invalid and already reported
    unit = info.data["unit"]
    if unit is None:
        raise ValueError(f"{value!r} has a unit, so the limit needs one to be compared in: add unit: {written}")
    try:
        if info.field_name == "max_step":
            return convert(number, written, unit) - convert(0.0, written, unit)
        return convert(number, written, unit)
    except UnitError as e:
        raise ValueError(str(e)) from None


LimitValue = Annotated[float | None, BeforeValidator(_limit_in_unit)]


class EnvelopeLimit(Strict):
    """Hard limits of one parameter, in `unit` (declared first: min/max/max_step may be written with a
    unit of their own, e.g. "720 K", and are converted into it)."""

    unit: str | None = None
    min: LimitValue = None
    max: LimitValue = None
    max_step: LimitValue = Field(None, gt=0)
    max_rate: float | None = Field(None, gt=0, description="unit per minute")
    allowed: list[Label] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # Limits sit under parameter names (extras of the envelope), where a tool reading the schema cannot
        # tell which keys a limit takes; so a misspelled one is named here, with the likely intended key.
        for key in data if isinstance(data, dict) else ():
            if key not in cls.model_fields:
                close = get_close_matches(str(key), list(cls.model_fields), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"a limit takes {', '.join(cls.model_fields)}"
                raise located(str(key), f"unknown key {key!r}; {hint}")
        return data

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        return None if value is None else _check_unit(value)

    @model_validator(mode="after")
    def _ordered(self) -> EnvelopeLimit:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise located("min", f"min {self.min} is above max {self.max}")
        numeric = (self.min, self.max, self.max_step, self.max_rate)
        if self.allowed is not None and any(v is not None for v in numeric):
            raise located("allowed", "`allowed` (a list of accepted values) cannot be combined with min/max/max_step/max_rate")
        return self

    def to_limit(self, unit: str) -> Limit:
        """The `drivers.base.Limit` the envelope checks, in `unit` (the parameter's, see `parameter_unit`)."""
        allowed = None if self.allowed is None else tuple(self.allowed)
        return Limit(self.min, self.max, unit, self.max_step, self.max_rate, allowed)


class EnvelopeSection(BaseModel):
    """Per-parameter limits, plus `min_interval`: the shortest time allowed between setpoint changes, and
    `unchecked`: why parameters without a limit may be sent anyway (a bench instrument that limits itself).

    Every parameter the planner moves needs a limit (`controller.protocol.limits`); `unchecked` is the one,
    explicit way out, and its reason is shown at start and journaled in the campaign file."""

    # Parameter names are the keys, so they are extras validated as limits (error paths stay as written).
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, EnvelopeLimit]

    min_interval: Duration = 0.0
    unchecked: str | None = None

    @field_validator("unchecked", mode="before")
    @classmethod
    def _a_reason(cls, value: Any) -> Any:
        # A flag would be too easy to copy from protocol to protocol: the opt-out is the reason itself.
        if value is None or (isinstance(value, str) and value.strip()):
            return value
        raise ValueError("unchecked takes the reason no limit is needed, e.g. unchecked: \"bench supply, "
                         "current-limited in hardware\"; or remove it and give each parameter {min: ..., max: ...}")

    @property
    def limits(self) -> dict[str, EnvelopeLimit]:
        return dict(self.__pydantic_extra__ or {})


