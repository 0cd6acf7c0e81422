"""The MBE chamber's heater loops as Eurotherm controllers on Modbus: a real pymodbus server (TCP, or RTU
on a pseudo-terminal) whose registers are the emulated chamber's (`simulators.mbe.wire.MbeWireModel`), so
the temperatures the growth physics sees are the ones set through Modbus, and a setpoint written over
Modbus lands in the same `record` as one sent over the growth controller's line.

Units (Modbus device ids) 1, 2, 3 are the Sr cell, the Ru cell and the substrate heater. Each serves the
register map of `drivers.modbus_controller` in both encodings at once, as a Eurotherm does: scaled 16-bit
integers with `decimals` decimals, and IEEE floats at 0x8000 + 2 * address. PV, output power, working
setpoint and alarm status are read-only (writing them is an exception reply, "illegal data address"), as
is any address the map leaves out. The high alarm (alarm 1) is active while PV is above its alarm
setpoint (default: the heater's envelope maximum). Auto/manual is kept but not simulated: the loop
always follows its setpoint. A setpoint rate limit of 0 means "no limit", as on a Eurotherm.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import select
import struct
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.modbus_controller import (
    ALARM_1_SP,
    ALARM_1_STATUS,
    AUTO_MANUAL,
    FLOAT_BASE,
    OUTPUT_POWER,
    PV,
    RAMP_RATE,
    TARGET_SP,
    WORKING_SP,
)
from closedloop.simulators.mbe.wire import CONTROLLERS, MbeWireModel

WRITABLE = (TARGET_SP, RAMP_RATE, ALARM_1_SP, AUTO_MANUAL)
READ_ONLY = (PV, OUTPUT_POWER, WORKING_SP, ALARM_1_STATUS)
PARAMETERS = tuple(sorted(WRITABLE + READ_ONLY))
ENUMERATED = (AUTO_MANUAL, ALARM_1_STATUS)  # whole numbers in their 16-bit registers, whatever `decimals`
# Modbus unit -> the growth controller's loop it is.
UNITS: dict[int, str] = {1: "SR_CELL", 2: "RU_CELL", 3: "SUBSTRATE"}
_NO_LIMIT_PER_MIN = 1e9  # what a rate limit of 0 ("off") becomes: the ramp ends at once


class MbeHeaterLoop:
    """One heater loop of an `MbeWireModel` (`ctrl`: SR_CELL, RU_CELL or SUBSTRATE) as Eurotherm
    parameters. `lock` serialises it with whoever else drives the same model (the line server)."""

    def __init__(self, model: MbeWireModel, ctrl: str, lock: threading.Lock) -> None:
        if ctrl not in CONTROLLERS:
            raise ValueError(f"no heater loop {ctrl!r}; loops: {', '.join(CONTROLLERS)}")
        self.model, self.ctrl, self.lock = model, ctrl, lock
        self.alarm_1_sp = float(MBE_ENVELOPE.limits[CONTROLLERS[ctrl]].max or math.inf)
        self.manual = False

    def read(self, parameter: int) -> float:
        """The parameter's present value (the model catches up with its clock first)."""
        with self.lock:
            query = {PV: "PV?", TARGET_SP: "SP?", OUTPUT_POWER: "OP?", RAMP_RATE: "RATE?"}.get(parameter)
            if query is not None:
                return float(str(self.model.handle(f"{self.ctrl}:{query}")))
            self.model.handle(f"{self.ctrl}:SP?")  # catch up, so the loop's state is now
            loop = self.model.chamber.controllers[CONTROLLERS[self.ctrl]]
            if parameter == WORKING_SP:
                return loop.working_setpoint
            if parameter == ALARM_1_STATUS:
                return float(loop.process_value > self.alarm_1_sp)
            return self.alarm_1_sp if parameter == ALARM_1_SP else float(self.manual)

    def write(self, parameter: int, value: float) -> bool:
        """Apply a write; False: the controller refuses the value (an "illegal data value" reply)."""
        if not math.isfinite(value):
            return False
        with self.lock:
            if parameter == TARGET_SP:
                self.model.handle(f"{self.ctrl}:SP {value!r}")
            elif parameter == RAMP_RATE:
                if value < 0:
                    return False
                self.model.handle(f"{self.ctrl}:RATE {value if value > 0 else _NO_LIMIT_PER_MIN!r}")
            elif parameter == ALARM_1_SP:
                self.alarm_1_sp = value
            elif parameter == AUTO_MANUAL:
                if value not in (0.0, 1.0):
                    return False
                self.manual = value == 1.0
            else:
                return False
        return True


def mbe_rack(model: MbeWireModel, lock: threading.Lock | None = None) -> dict[int, MbeHeaterLoop]:
    """Units 1-3 of `UNITS` on one model, sharing `lock` (a new one if None)."""
    shared = lock or threading.Lock()
    return {unit: MbeHeaterLoop(model, ctrl, shared) for unit, ctrl in UNITS.items()}


class Registers:
    """Eurotherm registers of one loop: parameter values in and out of scaled and float32 registers."""

    def __init__(self, loop: MbeHeaterLoop, decimals: int) -> None:
        self.loop, self.scale = loop, 10**decimals

    def simdata(self) -> list[SimData]:
        data = []
        for p in PARAMETERS:
            readonly = p in READ_ONLY
            data.append(SimData(p, values=0, datatype=DataType.REGISTERS, readonly=readonly))
            data.append(SimData(FLOAT_BASE + 2 * p, values=[0, 0], datatype=DataType.REGISTERS, readonly=readonly))
        return data

    @staticmethod
    def parameter_at(address: int) -> tuple[int, bool] | None:
        """(parameter, as float32) of the register that starts a parameter at `address`."""
        if address in PARAMETERS:
            return address, False
        offset = address - FLOAT_BASE
        if offset >= 0 and offset % 2 == 0 and offset // 2 in PARAMETERS:
            return offset // 2, True
        return None

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: Sequence[Any] | None) -> ExcCodes | None:
        """pymodbus's SimDevice hook: fill the registers a read asks for, or apply a write."""
        return self.apply(start_address, address, count, registers, set_values)

    def apply(self, start_address: int, address: int, count: int, registers: list[int],
              set_values: Sequence[Any] | None) -> ExcCodes | None:
        """Fill `registers` (which start at `start_address`) with the `count` a read at `address` asks for,
        or apply `set_values` written at `address`; an exception code when the loop refuses them."""
        if set_values is None:
            for a in range(address, address + count):
                if (found := self.parameter_at(a)) is not None:
                    words = self._words(found[0], self.loop.read(found[0]), found[1])
                    registers[a - start_address: a - start_address + len(words)] = words
            return None
        a, i = address, 0
        while i < len(set_values):
            found = self.parameter_at(a)
            width = 2 if found is not None and found[1] else 1
            if found is None or i + width > len(set_values):
                return ExcCodes.ILLEGAL_ADDRESS  # half a float, or not the start of a parameter
            words = [int(v) for v in set_values[i:i + width]]
            if not self.loop.write(found[0], self._value(found[0], words)):
                return ExcCodes.ILLEGAL_VALUE
            a, i = a + width, i + width
        return None

    def _scale(self, parameter: int) -> int:
        return 1 if parameter in ENUMERATED else self.scale  # a mode or a status has no decimals

    def _words(self, parameter: int, value: float, as_float: bool) -> list[int]:
        if as_float:
            return list(struct.unpack(">HH", struct.pack(">f", value)))
        raw = max(-32768, min(32767, round(value * self._scale(parameter))))  # the display's over-range, not a wrap
        return [raw & 0xFFFF]

    def _value(self, parameter: int, words: list[int]) -> float:
        if len(words) == 2:
            return float(struct.unpack(">f", struct.pack(">HH", *words))[0])
        return (words[0] - 0x10000 if words[0] >= 0x8000 else words[0]) / self._scale(parameter)


class ModbusEmulator:
    """A pymodbus server for `loops` (unit -> loop) on a thread of its own, over TCP (`start_tcp`) or RTU
    on a pseudo-terminal (`start_rtu`); `url(unit)` says where a client connects."""

    def __init__(self, loops: Mapping[int, MbeHeaterLoop], *, decimals: int = 1) -> None:
        self.registers = {unit: Registers(loop, decimals) for unit, loop in loops.items()}
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._server: ModbusBaseServer | None = None
        self._thread: threading.Thread | None = None
        self._ptys: PtyPair | None = None

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> ModbusEmulator:
        """Listen on host:port (0: any free port); returns self."""

        def tcp(devices: list[SimDevice]) -> ModbusBaseServer:
            return ModbusTcpServer(devices, address=(host, port))

        self._start(tcp, f"{host}:{port}")
        listener: Any = self._server.transport if self._server else None  # an asyncio Server on TCP
        self.base_url = f"modbus+tcp://{host}:{int(listener.sockets[0].getsockname()[1])}"
        return self

    def start_rtu(self) -> ModbusEmulator:
        """Serve Modbus RTU (9600 baud, 8N1) on one of two linked pseudo-terminals; a client opens the
        other, as if at the far end of an RS-485 line. Returns self."""
        self._ptys = PtyPair()
        server_path = self._ptys.paths[0]

        def rtu(devices: list[SimDevice]) -> ModbusBaseServer:
            return ModbusSerialServer(devices, framer=FramerType.RTU, port=server_path, baudrate=9600)

        self._start(rtu, server_path)
        self.base_url = f"modbus+rtu://{self._ptys.paths[1]}"
        return self

    def _start(self, make: Callable[[list[SimDevice]], ModbusBaseServer], where: str) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        async def listen() -> None:
            devices = [SimDevice(unit, simdata=r.simdata(), action=r.action) for unit, r in self.registers.items()]
            self._server = make(devices)  # pymodbus servers are made inside their event loop
            await self._server.serve_forever(background=True)

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(listen())
            except BaseException as e:  # reported to the caller, which raises it
                failure.append(e)
                return
            finally:
                started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="modbus-emulator", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure or self._server is None:
            raise OSError(f"cannot serve Modbus on {where}: {failure[0] if failure else 'timed out'}")

    def url(self, unit: int) -> str:
        return f"{self.base_url}?unit={unit}"

    def close(self) -> None:
        """Stop serving and end the thread (idempotent)."""
        if self._thread is None:
            return
        if self._server is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._thread = None
        self._loop.close()
        if self._ptys is not None:
            self._ptys.close()


class PtyPair:
    """Two raw pseudo-terminals whose master sides a thread joins: bytes written to one's `paths` entry
    come out of the other's, like a null-modem cable (what socat's pty,pty does)."""

    def __init__(self) -> None:
        self._fds = [os.openpty() for _ in range(2)]
        for master, slave in self._fds:
            tty.setraw(master)
            tty.setraw(slave)
        self.paths = [os.ttyname(slave) for _, slave in self._fds]
        self._stop = threading.Event()
        threading.Thread(target=self._relay, name="pty-pair", daemon=True).start()

    def _relay(self) -> None:
        (a, _), (b, _) = self._fds
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for fd in ready:
                    data = os.read(fd, 4096)
                    os.write(b if fd == a else a, data)

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.15)  # the relay sees the flag before its descriptors go
        for pair in self._fds:
            for fd in pair:
                with contextlib.suppress(OSError):
                    os.close(fd)


class LockedModel:
    """The growth controller's line model taking the lock its Modbus loops take, for a process serving
    both (`closedloop emulate mbe --modbus-tcp PORT`): the two servers' threads never move its clock twice."""

    def __init__(self, model: MbeWireModel, lock: threading.Lock) -> None:
        self.model, self.lock = model, lock

    def handle(self, line: str) -> str | bytes | None:
        with self.lock:
            return self.model.handle(line)

    def reset(self) -> None:
        with self.lock:
            self.model.reset()


def serve_mbe_rack(model: MbeWireModel, port: int | None = 0, *, decimals: int = 1) -> tuple[LockedModel, ModbusEmulator]:
    """Serve `model`'s heater loops (units as in `UNITS`) on Modbus TCP 127.0.0.1:`port`, or on RTU over a
    pseudo-terminal when `port` is None; returns the model to serve on the line in its place, and the
    running server."""
    lock = threading.Lock()
    server = ModbusEmulator(mbe_rack(model, lock), decimals=decimals)
    return LockedModel(model, lock), server.start_rtu() if port is None else server.start_tcp(port=port)


def rack_summary(server: ModbusEmulator) -> str:
    """One line saying where each unit is: `modbus+tcp://127.0.0.1:5020 (unit 1 SR_CELL, ...)`."""
    units = ", ".join(f"unit {unit} {ctrl}" for unit, ctrl in UNITS.items())
    return f"{server.base_url} ({units})"
