"""What `ModbusController` sends its requests through: a pymodbus client on the wire (TCP or RTU), or, when
the instrument the controllers belong to is simulated in this process, that simulation's register bank.

The request layer is pymodbus's own client interface (`ModbusClient`): `read_holding_registers`,
`write_register`, `write_registers` returning pymodbus PDUs (an `ExceptionResponse` for a refusal), a
`ModbusException` or `OSError` for no reply. An in-process bank implements the same methods with the same
results, so every encoding, envelope check, read-back and journal line stays the controller's own code.

Who simulates what is the simulators layer's business, not the drivers': a port that simulates an
instrument in process (`sim://mbe`) has its Modbus controllers attached here by whoever opened it
(`attach_in_process_controllers`), and a driver asks for them by its link's port
(`in_process_controllers`), never importing a simulator.
"""

from __future__ import annotations

import weakref
from typing import Protocol

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.pdu import ModbusPDU

from closedloop.drivers.modbus_url import ModbusLink


class ModbusClient(Protocol):
    """The part of a pymodbus sync client `ModbusController` uses."""

    @property
    def connected(self) -> bool: ...

    def connect(self) -> bool: ...

    def close(self) -> None: ...

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU: ...

    def write_register(self, address: int, value: int, *, device_id: int = 1) -> ModbusPDU: ...

    def write_registers(self, address: int, values: list[int], *, device_id: int = 1) -> ModbusPDU: ...


class InProcessControllers(Protocol):
    """The Modbus controllers of an instrument simulated in this process."""

    def client(self, link: ModbusLink, loop: str, decimals: int) -> ModbusClient:
        """A client for the controller at `link` that runs the simulated instrument's loop `loop` (for the
        MBE chamber: SR_CELL, RU_CELL or SUBSTRATE), its scaled registers carrying `decimals` decimals as
        the protocol says the real one is set up. ValueError when the simulation has no such loop."""
        ...


def pymodbus_client(link: ModbusLink, timeout_s: float) -> ModbusTcpClient | ModbusSerialClient:
    """A pymodbus client on the wire for `link`, not yet connected."""
    # retries=0: ModbusController decides what may be retried (reads) and what never is (writes).
    if link.transport == "tcp":
        return ModbusTcpClient(link.host, port=link.port, timeout=timeout_s, retries=0)
    return ModbusSerialClient(link.device, baudrate=link.baudrate, parity=link.parity, stopbits=link.stopbits,
                              timeout=timeout_s, retries=0)


# port -> the controllers simulated with it. Weak: a closed driver's port takes its simulation with it.
_IN_PROCESS: weakref.WeakKeyDictionary[object, InProcessControllers] = weakref.WeakKeyDictionary()


def attach_in_process_controllers(port: object, controllers: InProcessControllers) -> None:
    """From now on, Modbus controllers named beside `port` (an in-process simulation's) are `controllers`."""
    _IN_PROCESS[port] = controllers


def in_process_controllers(port: object) -> InProcessControllers | None:
    """The Modbus controllers simulated together with `port`, or None for a port to a real instrument
    (then a controller's URL is reached on the wire)."""
    try:
        return _IN_PROCESS.get(port)
    except TypeError:  # a port that cannot be weakly referenced was never attached
        return None
