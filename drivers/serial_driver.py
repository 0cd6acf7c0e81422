"""The generic serial/SCPI instrument driver: everything it sends comes from the protocol file.

One trial: identify the instrument (once per connection), run the setup commands, send each setpoint
(converted to the unit the instrument wants, formatted by the protocol's template), start, wait, and
query each measured quantity. After every command without a reply the error queue is read, so an
instrument that refused a command stops the trial with the command and its error named.

Templates: a `set` command fills `{value}` with the setpoint; `set` and `start` commands may also carry
`{sample}`, filled with the trial id, for an instrument that must know which sample it handles (a hot
plate on a line: `start: ["SAMP:ID {sample}", "INIT"]`). Any other placeholder is refused when the
protocol is validated, located at the command; `{{` and `}}` write literal braces in `start` commands.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import (
    Clock,
    DriverDescription,
    EnvelopeViolation,
    InstrumentContext,
    InstrumentFault,
    Journal,
    Measurement,
    Value,
)
from closedloop.drivers.scpi import (
    ScpiParseError,
    check_error_queue,
    decode_block,
    drain_error_queue,
    parse_list,
    parse_number,
    parse_regex,
)
from closedloop.drivers.serial_config import MeasureSpec, SerialInstrumentConfig
from closedloop.drivers.transport import Port, SerialTransport
from closedloop.units import convert, duration_seconds

ANALYSIS = "scpi-query"
ANALYSIS_VERSION = "1"

log = logging.getLogger(__name__)

_REDUCE: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean,
    "median": np.median,
    "min": np.min,
    "max": np.max,
    "first": lambda a: a[0],
    "last": lambda a: a[-1],
}


class SerialInstrumentDriver:
    """A `drivers.base.Driver` for any line-oriented instrument described by a `SerialInstrumentConfig`.

    `port` replaces the pyserial port built from `config.connection` (an in-process emulator for
    `sim://` connections, which this layer cannot build itself).
    """

    # Whoever builds the driver on an in-process emulator sets this: the engine then runs it in virtual
    # time, and the transport hands each trial's clock to the emulated device.
    def __init__(self, config: SerialInstrumentConfig, *, port: Port | None = None) -> None:
        self.config = config
        self.transport = SerialTransport(config.connection, config.serial.to_transport(), port=port)
        self._description = config.describe()
        self.instrument_id = ""
        self._identified_on = -1  # transport connection number the identity was read on
        self._last_sent: dict[str, Value] = {}
        self._unconfirmed: dict[str, Value] = {}  # setpoint held before a send that was never confirmed
        self._last_change_at: float | None = None
        self._clock: Clock | None = None

    # -- what the instrument accepts -------------------------------------------------------------

    def describe(self) -> DriverDescription:
        return self._description

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse conditions outside the envelope, a step too large from the last setpoint sent, a change
        sooner than `min_interval` after the last one, or a value its command template cannot format.
        Parameters left out are not sent (the instrument keeps its current setting)."""
        self._check(conditions, self._clock.now() if self._clock is not None else None, sample=0)

    def _check(self, conditions: Mapping[str, Value], now: float | None, sample: int) -> list[tuple[str, str]]:
        self._description.envelope.check(conditions, self._last_sent)
        if self._unconfirmed:
            self._description.envelope.check(conditions, self._unconfirmed)
        changed = [name for name, value in conditions.items() if self._last_sent.get(name) != value]
        interval = self.config.envelope.min_interval
        if changed and interval > 0 and now is not None and self._last_change_at is not None:
            elapsed = now - self._last_change_at
            if elapsed < interval:
                name = changed[0]
                raise EnvelopeViolation(
                    name, conditions[name], f"setpoints may change only every {interval:g} s; the last change was {elapsed:.3g} s ago"
                )
        # In the protocol's `set` order: instruments may care (e.g. a dwell before a temperature).
        return [(name, self._format(name, conditions[name], sample)) for name in self.config.set if name in conditions]

    def _format(self, name: str, value: Value, sample: int) -> str:
        entry = self.config.set[name]
        wire_value: Value = value
        if entry.unit and not isinstance(value, str):
            wire_value = convert(float(value), self.config.parameter_unit(name), entry.unit)
        try:
            command = entry.command.format(value=wire_value, sample=sample)
            command.encode(self.config.serial.encoding)
        except (ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
            raise EnvelopeViolation(name, value, f"cannot be written into the command {entry.command!r} ({e})") from None
        return command

    # -- one trial -------------------------------------------------------------------------------

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        started = ctx.clock.now()
        self._clock = ctx.clock
        commands = self._check(conditions, started, ctx.trial_id)  # before a single byte is written
        self.transport.set_journal(ctx.journal)
        self.transport.follow_clock(ctx.clock)
        self._identify()
        self._clear_errors_left_over(f"before trial {ctx.trial_id}")
        reconnects_before = self.transport.reconnects
        for command in self.config.setup:
            self._send(command)
            self._refuse_if_reconnected(reconnects_before, command)
        for name, command in commands:
            previous = self._last_sent.get(name)
            if previous != conditions[name]:
                self._last_change_at = ctx.clock.now()
                if previous is not None:
                    # Until the instrument confirms, it may hold either value: steps are checked from both.
                    self._unconfirmed[name] = previous
            self._last_sent[name] = conditions[name]
            self._send(command)
            self._unconfirmed.pop(name, None)
            self._refuse_if_reconnected(reconnects_before, command)
        for template in self.config.start:
            self._send(template.format(sample=ctx.trial_id))
        self._refuse_if_reconnected(reconnects_before, "start")
        self._wait(conditions, ctx.clock)
        values: dict[str, float] = {}
        artifacts: dict[str, Any] = {}
        for name, spec in self.config.measure.items():
            values[name], array = self._measure(name, spec)
            if array is not None:
                artifacts[name] = array
        self._check_errors("the measurement queries")
        bad = sorted(name for name, v in values.items() if not math.isfinite(v))
        return Measurement(
            values=values,
            units={name: spec.unit for name, spec in self.config.measure.items()},
            status="failed_sample" if bad else "ok",
            artifacts=artifacts,
            analysis=ANALYSIS,
            analysis_version=ANALYSIS_VERSION,
            instrument=self.instrument_id,
            detail=f"no valid reading for {', '.join(bad)} (NaN/overload)" if bad else "",
            duration_s=ctx.clock.now() - started,
        )

    def _identify(self) -> None:
        identify = self.config.identify
        self.transport.open()
        if self.transport.connections == self._identified_on:
            return
        if identify is None:
            self.instrument_id = self.config.connection
        else:
            reply = self.transport.query(identify.query)
            if identify.expect is not None and re.search(identify.expect, reply) is None:
                raise InstrumentFault(
                    f"{self.config.connection}: {identify.query} answered {reply!r}, which does not match the expected "
                    f"{identify.expect!r}; is this the right instrument (or port)?"
                )
            self.instrument_id = reply
        self._identified_on = self.transport.connections

    def _refuse_if_reconnected(self, before: int, step: str) -> None:
        if self.transport.reconnects != before:
            raise InstrumentFault(
                f"the link to {self.config.connection} dropped and was re-established during the trial (at {step!r}); "
                "commands sent before may not have arrived, so the trial is abandoned rather than measured"
            )

    def _send(self, command: str) -> None:
        self.transport.write(command)
        self._check_errors(command)

    def _check_errors(self, after: str) -> None:
        if self.config.error_query is not None:
            check_error_queue(self.transport.query, self.config.error_query, after, "the instrument")

    def _clear_errors_left_over(self, when: str) -> None:
        """Empty the error queue of what earlier commands left there (the safe state, a previous trial, a
        previous process), so those errors are not blamed on this trial's first command. The queries and
        replies are journaled with the trial's commands; the leftovers are logged."""
        if self.config.error_query is None:
            return
        leftover = drain_error_queue(self.transport.query, self.config.error_query, when)
        if leftover:
            log.warning("%s: errors left in the queue %s (not from this trial's commands): %s",
                        self.config.connection, when, "; ".join(leftover))

    def _wait(self, conditions: Mapping[str, Value], clock: Clock) -> None:
        wait = self.config.wait
        if wait is None:
            return
        if wait.delay:
            clock.sleep(wait.delay)
        if wait.duration is not None:
            clock.sleep(wait.duration)
            return
        if wait.duration_from is not None:
            name = wait.duration_from
            clock.sleep(duration_seconds(f"{float(conditions[name])} {self.config.parameter_unit(name)}"))
            return
        if wait.query is None:
            return  # a fixed delay alone
        assert wait.until is not None and wait.timeout is not None
        until = re.compile(wait.until)
        deadline = clock.now() + wait.timeout
        while True:
            reply = self.transport.query(wait.query)
            if until.search(reply):
                return
            if clock.now() >= deadline:
                raise InstrumentFault(
                    f"waited {wait.timeout:g} s for {wait.query} to match {wait.until!r}; last reply {reply!r}"
                )
            clock.sleep(wait.poll)

    def _measure(self, name: str, spec: MeasureSpec) -> tuple[float, np.ndarray | None]:
        try:
            if spec.parse == "block":
                array = decode_block(self.transport.query_block(spec.query), spec.dtype)
                return self._reduce(name, spec, array), array
            reply = self.transport.query(spec.query)
            if spec.parse in ("float", "int", "regex"):
                number = parse_number(reply) if spec.pattern is None else parse_regex(reply, spec.pattern)
                if spec.parse == "int" and math.isfinite(number) and not number.is_integer():
                    raise ScpiParseError(f"expected a whole number, got {reply!r}")
                return number, None
            array = np.asarray(parse_list(reply), dtype=np.float64)
            return self._reduce(name, spec, array), array
        except ScpiParseError as e:
            raise InstrumentFault(f"{name}: the reply to {spec.query} could not be read as {spec.parse}: {e}") from None

    @staticmethod
    def _reduce(name: str, spec: MeasureSpec, array: np.ndarray) -> float:
        if array.size == 0:
            raise ScpiParseError(f"{name}: {spec.query} returned no values")
        return float(_REDUCE[spec.reduce](array))

    # -- after a trial ---------------------------------------------------------------------------

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        """A generic instrument keeps no record of past trials, so an interrupted one cannot be recovered."""
        return None

    def safe_state(self) -> None:
        """Send the protocol's safe-state commands; failures are logged, never raised."""
        reached = True
        for command in self.config.safe_state:
            try:
                self.transport.write(command)
            except Exception as e:  # safe_state must never raise, whatever the link does
                reached = False
                log.warning("safe_state: %r to %s failed: %s", command, self.config.connection, e)
        if not reached:
            return  # the link is down: querying its error queue would only wait out the timeouts
        try:
            self._clear_errors_left_over("after the safe-state commands")
        except Exception as e:
            log.warning("safe_state: reading the error queue of %s failed: %s", self.config.connection, e)

    def set_journal(self, journal: Journal | None) -> None:
        """Journal the link's commands and replies from now on (see `drivers.base.Journaled`)."""
        self.transport.set_journal(journal)

    def close(self) -> None:
        self.transport.close()
