"""What an emulated SCPI instrument keeps besides its physics: the error queue read by `SYST:ERR?`, the
parsing of a numeric argument into it, and one overlapped operation at a time (polled with `*OPC?`).

A base for wire models (simulators/device/wire.py, simulators/trmc/wire.py); the furnace and the hot
plate still carry their own copies of these few methods.
"""

from __future__ import annotations

import math
from collections import deque

from closedloop.drivers.base import Clock


class ScpiDeviceState:
    """Error queue and busy state of an emulated SCPI instrument on `clock`."""

    clock: Clock

    def clear_state(self, power_on: bool) -> None:
        """An empty queue and no operation running; a power cycle (not power_on) queues -315."""
        self._busy_until = -math.inf
        self._errors: deque[str] = deque(maxlen=16)
        if not power_on:
            self._errors.append('-315,"Configuration memory lost"')

    def clear_errors(self) -> None:
        """*CLS: the queue emptied; an operation in progress runs on."""
        self._errors.clear()

    def _error(self, entry: str) -> None:
        self._errors.append(entry)

    def _number(self, argument: str, low: float, high: float) -> float | None:
        """The argument as a number in [low, high], or None with -104/-222 queued."""
        try:
            value = float(argument)
        except ValueError:
            self._error('-104,"Data type error"')
            return None
        if not (math.isfinite(value) and low <= value <= high):
            self._error('-222,"Data out of range"')
            return None
        return value

    def _busy(self) -> bool:
        return self.clock.now() < self._busy_until

    def _start(self, seconds: float) -> bool:
        """Begin an overlapped operation; refused (-213) while another one runs."""
        if self._busy():
            self._error('-213,"Init ignored: operation in progress"')
            return False
        self._busy_until = self.clock.now() + seconds
        return True

    def _pop_error(self) -> str:
        return self._errors.popleft() if self._errors else '0,"No error"'
