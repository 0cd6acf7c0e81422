"""The MBE chamber's heater loops as Modbus controllers inside this process: what `sim://mbe` gives a
protocol whose cells are on Modbus (`instrument.options.cells`), so `validate --dry-run` and `run --sim`
reach them in virtual time, deterministically, with no socket and no thread.

Each client is a register bank answering pymodbus's client calls (`drivers.modbus_client.ModbusClient`)
on the same chamber model as the growth controller's line. A request takes the path a pymodbus server
gives it: the request PDU pymodbus's client would send (checked the way its `encode` checks it), applied
by pymodbus's own simulator datastore (`SimCore`) to the devices `simulators.modbus_controller` serves
over TCP and RTU (`Registers`), so replies, exception codes and encodings are those of
`closedloop emulate mbe --modbus-tcp`. The datastore is pymodbus's internal class: a pymodbus upgrade that
changes it shows in tests/drivers/test_modbus_sim.py, which compares this bank with the TCP server.

Which loop a controller runs comes from the heater the protocol names it for, not from its unit id: a lab
numbers its controllers its own way, and the dry run must take the protocol as it will run live.
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simcore import SimCore

from closedloop.drivers.modbus_client import InProcessControllers, ModbusClient, attach_in_process_controllers
from closedloop.drivers.modbus_url import ModbusLink
from closedloop.simulators.emulator import EmulatedPort
from closedloop.simulators.mbe.wire import CONTROLLERS, MbeWireModel
from closedloop.simulators.modbus_controller import LockedModel, MbeHeaterLoop, Registers

T = TypeVar("T")


class RegisterBank:
    """One controller's registers in process (a `ModbusClient`): `unit` answers, any other unit id is
    silent (no reply, as a pymodbus server ignoring a missing device)."""

    def __init__(self, registers: Registers, unit: int) -> None:
        self.unit = unit
        self.core = SimCore([SimDevice(unit, simdata=registers.simdata(), action=registers.action)])
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> bool:
        self._connected = True
        return True

    def close(self) -> None:
        self._connected = False

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU:
        return self._execute(ReadHoldingRegistersRequest(address=address, count=count, dev_id=device_id))

    def write_register(self, address: int, value: int, *, device_id: int = 1) -> ModbusPDU:
        return self._execute(WriteSingleRegisterRequest(address=address, registers=[value], dev_id=device_id))

    def write_registers(self, address: int, values: list[int], *, device_id: int = 1) -> ModbusPDU:
        return self._execute(WriteMultipleRegistersRequest(address=address, registers=values, dev_id=device_id))

    def _execute(self, request: ModbusPDU) -> ModbusPDU:
        """The reply a pymodbus server would send (its request handler's steps, minus the wire)."""
        request.encode()  # the client's own checks (address and count in range): ValueError before sending
        if request.dev_id != self.unit:
            raise ModbusIOException(f"no reply from unit {request.dev_id}: this controller is unit {self.unit}")
        try:
            # pymodbus types the context as ModbusServerContext; its servers pass a SimCore here too.
            response = _at_once(request.datastore_update(cast(Any, self.core), self.unit))
        except Exception:  # what the server answers when its datastore fails
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id, response.dev_id = request.transaction_id, request.dev_id
        return response


class InProcessRack:
    """The Modbus controllers of one simulated chamber (`InProcessControllers`): one loop per heater,
    shared by every client of it, all serialised with the chamber's line by `lock`."""

    def __init__(self, model: MbeWireModel, lock: threading.Lock) -> None:
        self.model, self.lock = model, lock
        self.loops: dict[str, MbeHeaterLoop] = {}

    def client(self, link: ModbusLink, loop: str, decimals: int) -> ModbusClient:
        if loop not in CONTROLLERS:
            raise ValueError(f"the simulated chamber has no heater loop {loop!r}; loops: {', '.join(CONTROLLERS)}")
        heater = self.loops.setdefault(loop, MbeHeaterLoop(self.model, loop, self.lock))
        return RegisterBank(Registers(heater, decimals), link.unit)


def with_modbus_controllers(port: EmulatedPort) -> EmulatedPort:
    """`port` (the chamber's line, in process) with the chamber's heater loops attached as its Modbus
    controllers (`drivers.modbus_client.in_process_controllers(port)`). The line and the loops take one
    lock: a trial's thread and an abort's safe state never move the chamber's clock at once."""
    model = port.device.model
    if not isinstance(model, MbeWireModel):
        raise TypeError(f"Modbus controllers are simulated for the MBE chamber, not {type(model).__name__}")
    lock = threading.Lock()
    port.device.model = LockedModel(model, lock)
    rack: InProcessControllers = InProcessRack(model, lock)
    attach_in_process_controllers(port, rack)
    return port


def _at_once(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (an in-memory datastore's) to its end in this thread: no event
    loop, so it works from any trial's thread."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("the in-process Modbus datastore waited for something; it must answer at once")
