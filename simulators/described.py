"""An instrument simulated from its own protocol: the `simulate:` section of a `driver: serial`
description (drivers.serial_simulate) turned into a wire emulator, so a protocol written for an instrument
the project has never seen dry-runs through the real driver, transport and safety gate.

The model reads the protocol's own command templates: a line matching a `set` template stores that
setpoint (converted back from the wire unit into the parameter's), a `start` command begins a run that
lasts the process time, the wait query answers `busy` then `ready`, the identify query the identity, each
measure query a reading computed from the setpoints (`closedloop.formulas`) with seeded noise, and the
error query the oldest queued error (a setpoint outside the instrument's own `ranges`, a command the
protocol never sends). Unknown queries get no reply, as on a real instrument.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import Clock
from closedloop.drivers.scpi import encode_block
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_simulate import DescribedSimulation, SimulatedReading
from closedloop.formulas import Formula, parse_formula
from closedloop.records import Value
from closedloop.simulators.emulator import FollowedClock
from closedloop.units import convert, duration_seconds

_VALUE = r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\S+?)"


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching what `template` ("OUT_SP_1 {value:.0f}", "SAMP:ID {sample}") becomes once
    formatted; the value is captured as group `value`."""
    parts = []
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field == "value":
            parts.append(_VALUE)
        elif field is not None:
            parts.append(r"\d+")
    return re.compile("^" + "".join(parts) + "$")


class DescribedInstrument:
    """The `LineModel` (simulators.emulator) of the instrument `config` describes and simulates."""

    def __init__(self, config: SerialInstrumentConfig, clock: Clock, seed: int = 0) -> None:
        if not isinstance(config.simulate, DescribedSimulation):
            raise ValueError("the protocol describes no simulation: add a simulate: section with a measure formula")
        self.config = config
        self.simulation = config.simulate
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._sets = [(name, template_pattern(spec.command)) for name, spec in config.set.items()]
        self._starts = [template_pattern(t) for t in config.start]
        self._literals = {*config.setup, *config.safe_state}
        self._formulas: dict[str, Formula] = {
            name: parse_formula(reading.value, config.set) for name, reading in self.simulation.measure.items()
        }
        self.setpoints: dict[str, float] = {}
        self.errors: deque[str] = deque(maxlen=32)
        self._run_ends: float | None = None

    # -- one command line --------------------------------------------------------------------------

    def handle(self, line: str) -> str | bytes | None:
        command = line.strip()
        config = self.config
        if config.identify is not None and command == config.identify.query:
            return self.simulation.identity or "SIMULATED INSTRUMENT"
        if command == config.error_query:
            return self.errors.popleft() if self.errors else self.simulation.no_error
        if config.wait is not None and command == config.wait.query:
            return self.simulation.busy if self._running() else self.simulation.ready
        for name, spec in config.measure.items():
            if command == spec.query:
                return self._reply(name, spec.parse, spec.dtype)
        for name, pattern in self._sets:
            match = pattern.match(command)
            if match is not None:
                self._set(name, match.group("value"))
                return None
        if any(pattern.match(command) for pattern in self._starts):
            self._run_ends = self.clock.now() + self._process_time()
            return None
        if command not in self._literals:
            self.errors.append(self.simulation.unknown_command)
        return None

    def _set(self, name: str, text: str) -> None:
        try:
            wire = float(text)
        except ValueError:
            self.errors.append(self.simulation.error)
            return
        unit, wire_unit = self.config.parameter_unit(name), self.config.set[name].unit
        value = convert(wire, wire_unit, unit) if wire_unit and unit else wire
        allowed = self.simulation.ranges.get(name)
        if not math.isfinite(value) or (allowed is not None and not allowed.min <= value <= allowed.max):
            self.errors.append(self.simulation.error)  # refused: the setpoint stays as it was
            return
        self.setpoints[name] = value

    def _running(self) -> bool:
        return self._run_ends is not None and self.clock.now() < self._run_ends

    def _process_time(self) -> float:
        simulation = self.simulation
        if simulation.process_time_from is not None:
            name = simulation.process_time_from
            if name in self.setpoints:
                return duration_seconds(f"{self.setpoints[name]} {self.config.parameter_unit(name)}")
        return simulation.process_time or 0.0

    # -- readings ------------------------------------------------------------------------------------

    def truth(self, conditions: Mapping[str, Value]) -> dict[str, float]:
        """The readings without noise at `conditions` (in the parameters' units)."""
        values = {k: float(v) for k, v in conditions.items() if not isinstance(v, str)}
        return {name: formula.evaluate(values) for name, formula in self._formulas.items()}

    def _reply(self, name: str, parse: str, dtype: str) -> str | bytes:
        reading = self.simulation.measure[name]
        exact = self._formulas[name].evaluate(self.setpoints)
        points = reading.points if parse in ("list", "block") else 1
        values = [self._noisy(exact, reading) for _ in range(points)]
        if parse == "block":
            return encode_block(np.asarray(values, dtype=np.dtype(dtype)).tobytes())
        texts = ["nan" if not math.isfinite(v) else reading.reply.format(value=v) for v in values]
        return ",".join(texts)

    def _noisy(self, value: float, reading: SimulatedReading) -> float:
        if not math.isfinite(value):
            return value
        noise = reading.noise
        return value * (1.0 + noise.relative * self._rng.standard_normal()) + noise.absolute * self._rng.standard_normal()


def described_name(config: SerialInstrumentConfig, title: str) -> str:
    """A `sim://` name for the simulation of `config`: the protocol's name, and a digest of the section so
    two different descriptions never share one."""
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "instrument"
    return f"protocol-{slug}-{digest}"


def noise_free(config: SerialInstrumentConfig) -> Callable[[int, Any], Callable[[Mapping[str, Value]], dict[str, float]]]:
    """`truth(seed, options)` for the registry: the readings' formulas without noise."""

    def truth(seed: int, options: Any) -> Callable[[Mapping[str, Value]], dict[str, float]]:
        return DescribedInstrument(config, FollowedClock(), seed).truth

    return truth
