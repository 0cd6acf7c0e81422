"""The MBE heaters that have their own Modbus temperature controllers (`MbeOptions.cells`), for the MBE
driver: set a ramp and a setpoint, then read the controller back and check it holds what was asked.

The driver's envelope and ramp checks come first and stay the first line of defence; the controller's own
registers are the second: after every setpoint the target setpoint and the rate limit must read back as
written, the working setpoint must lie on the ramp (between where it was and the target, inside the
envelope), and the controller must be in automatic with its high alarm off. Anything else is an
`InstrumentFault` naming what disagreed, and the driver puts the chamber in its safe state.

When the chamber itself is simulated in this process, so are its controllers: the same requests then go
to register banks on the simulated chamber (drivers/modbus_client.py), in its virtual time.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from closedloop.drivers.base import InstrumentFault, Journal
from closedloop.drivers.mbe import HEATERS, MBE_ENVELOPE, ModbusCell
from closedloop.drivers.modbus_client import in_process_controllers
from closedloop.drivers.modbus_controller import ModbusController
from closedloop.drivers.modbus_url import parse_modbus_url

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModbusHeaters:
    """One `ModbusController` per heater in `cells` (heater -> its Modbus settings)."""

    def __init__(self, cells: Mapping[str, ModbusCell], *, on_fault: Callable[[], None], beside: object = None) -> None:
        """`on_fault()` runs before a fault from `set` or `verify_all` propagates (the safe state).
        `beside`: the growth controller's port; when it simulates the chamber in this process (`sim://mbe`),
        the cells' controllers are that simulation's, whatever their URLs (`simulated` is then True)."""
        simulation = in_process_controllers(beside)
        self.simulated = simulation is not None
        self.loops: dict[str, ModbusController] = {}
        for heater, cell in cells.items():
            link, ctrl = parse_modbus_url(cell.modbus), HEATERS[heater]
            client = None if simulation is None else simulation.client(link, ctrl, cell.decimals)
            self.loops[heater] = ModbusController(cell.modbus, MBE_ENVELOPE.limits[heater], name=ctrl,
                                                  encoding=cell.encoding, decimals=cell.decimals,
                                                  timeout_s=cell.timeout_s, client=client)
        self.asked: dict[str, tuple[float, float]] = {}  # heater -> (setpoint, rate) last written
        self.on_fault = on_fault

    def __contains__(self, heater: object) -> bool:
        return heater in self.loops

    def read_pv(self, heater: str) -> float:
        return self.loops[heater].read_process_value()

    def read_sp(self, heater: str) -> float:
        return self.loops[heater].read_target_setpoint()

    def set(self, heater: str, target: float, rate_per_min: float) -> None:
        """Rate limit, then setpoint, then the read-back check (`verify`). The caller has checked both
        against the envelope; the client checks them again before sending."""
        loop = self.loops[heater]
        loop.encode(target)  # a setpoint the registers cannot carry is refused before the rate is sent
        with self._safe_on_fault():
            start = loop.read_working_setpoint()
            loop.write_ramp_rate(rate_per_min)
            loop.write_setpoint(target)
            self.asked[heater] = (float(target), float(rate_per_min))
            self.verify(heater, ramp_from=start)

    def verify(self, heater: str, *, ramp_from: float | None = None) -> None:
        """InstrumentFault unless the controller holds the setpoint and rate last written (if any), its
        working setpoint is inside the envelope (and between `ramp_from` and the target, when given), it
        is in automatic and its high alarm is off."""
        loop, ctrl, limit = self.loops[heater], HEATERS[heater], MBE_ENVELOPE.limits[heater]
        problems: list[str] = []
        alarms = loop.read_alarms()
        if alarms.alarm_1:
            problems.append("its high alarm (alarm 1) is active")
        if alarms.manual:
            problems.append("it is in manual mode, ignoring its setpoint")
        # What the encoding carries: a scaled register's last decimal, a float32's seventh digit.
        tolerance = loop.resolution() / 2 + 1e-6 * max(1.0, abs(limit.max or 1.0))
        if heater in self.asked:
            target, rate = self.asked[heater]
            held_sp, held_rate = loop.read_target_setpoint(), loop.read_ramp_rate()
            if abs(held_sp - target) > tolerance:
                problems.append(f"its target setpoint reads {held_sp:g}, not the {target:g} written")
            if abs(held_rate - rate) > tolerance:
                problems.append(f"its setpoint rate limit reads {held_rate:g}, not the {rate:g} degC/min written")
        working = loop.read_working_setpoint()
        if not (limit.min or -math.inf) - tolerance <= working <= (limit.max or math.inf) + tolerance:
            problems.append(f"its working setpoint {working:g} is outside the envelope {limit.min:g}-{limit.max:g}")
        elif ramp_from is not None and heater in self.asked:
            low, high = sorted((ramp_from, self.asked[heater][0]))
            if not low - tolerance <= working <= high + tolerance:
                problems.append(f"its working setpoint {working:g} is not on the ramp from {ramp_from:g}")
        if problems:
            raise InstrumentFault(f"{ctrl}'s Modbus controller at {loop.url}: {'; '.join(problems)}; "
                                  "the chamber was put in its safe state; check the controller, then resume")

    def verify_all(self, heaters: Iterable[str] | None = None) -> None:
        """`verify` each of `heaters` that has a Modbus controller (None: all of them)."""
        with self._safe_on_fault():
            for heater in self.loops if heaters is None else heaters:
                if heater in self.loops:
                    self.verify(heater)

    @contextlib.contextmanager
    def _safe_on_fault(self) -> Iterator[None]:
        try:
            yield
        except InstrumentFault:
            self.on_fault()
            raise

    def go_idle(self, idle: Mapping[str, float], rates: Mapping[str, float]) -> None:
        """Each heater above its idle temperature ramps down to it (rate first); one that reads at or
        below idle is left alone (an abort never heats). Never raises: every step is tried on its own."""
        for heater, loop in self.loops.items():
            target = _attempt(f"{heater}: reading its target setpoint", loop.read_target_setpoint)
            if target is not None and target <= idle[heater]:
                continue
            _attempt(f"{heater}: ramp rate {rates[heater]} for idle", loop.write_ramp_rate, rates[heater])
            _attempt(f"{heater}: idle setpoint {idle[heater]}", loop.write_setpoint, idle[heater])
            self.asked[heater] = (idle[heater], rates[heater])

    def set_journal(self, journal: Journal | None) -> None:
        for loop in self.loops.values():
            loop.set_journal(journal)

    def close(self) -> None:
        for loop in self.loops.values():
            with contextlib.suppress(Exception):
                loop.close()


def _attempt(what: str, step: Callable[..., T], *args: float) -> T | None:
    """One step of going idle: its result, or None after logging why it failed (the next step is tried
    anyway; a safe state must not stop at the first controller that does not answer)."""
    try:
        return step(*args)
    except Exception as e:  # noqa: BLE001 - logged; going idle never raises
        log.warning("going idle, %s failed: %s", what, e)
        return None
