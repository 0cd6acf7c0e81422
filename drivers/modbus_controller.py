"""A Eurotherm-class temperature controller over Modbus (TCP or RTU), as MBE cells and furnaces have them.

The register map is the Eurotherm 2400/3500 one (2400 series communications manual, HA026230, "Modbus
addresses" of the common parameters; the 3500 keeps them):

    1 PV (process value)          2 target setpoint        3 output power (%)      5 working setpoint
    13 alarm 1 setpoint           35 setpoint rate limit (units/min; 0 means no limit)
    273 auto/manual (0 auto, 1 manual)                     294 alarm 1 status (0 off, 1 active)

A 16-bit register holds a scaled signed integer with the display's fixed number of decimals (1877.5 is
18775 with one decimal); the same parameter is also an IEEE 754 float (two registers, high word first) at
0x8000 + 2 * address. `encoding` chooses which one this client uses; `decimals` must match the controller.

Safety, as in the serial transport: a setpoint outside the loop's `Limit` (or non-finite) is refused and
journaled as "REFUSED ..." before a byte is sent; reads are retried a few times on no reply; a write whose
outcome is unknown is never sent again: its register is read back, and anything but the value written is
an `InstrumentFault`. Every request and reply goes to the journal ("tx"/"rx").

Requests go through a pymodbus client on the wire, or through the register bank of a controller simulated
in this process (drivers/modbus_client.py): the same code above either, so a dry run checks what a live
run would send.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pymodbus.exceptions import ModbusException

from closedloop.drivers.base import EnvelopeViolation, InstrumentFault, Journal, Limit
from closedloop.drivers.modbus_client import ModbusClient, pymodbus_client
from closedloop.drivers.modbus_url import parse_modbus_url

PV, TARGET_SP, OUTPUT_POWER, WORKING_SP = 1, 2, 3, 5
ALARM_1_SP, RAMP_RATE, AUTO_MANUAL, ALARM_1_STATUS = 13, 35, 273, 294
FLOAT_BASE = 0x8000  # IEEE region: parameter `a` at FLOAT_BASE + 2 * a

Encoding = Literal["scaled", "float32"]


@dataclass(frozen=True)
class Alarms:
    """What the controller's own protection says: `alarm_1` (the high alarm, PV above its alarm setpoint)
    is active; `manual`: the loop is in manual mode, so it ignores its setpoint."""

    alarm_1: bool
    manual: bool

    @property
    def active(self) -> bool:
        return self.alarm_1 or self.manual


class ModbusController:
    """One loop of a temperature controller at `url` (see `parse_modbus_url`), refusing setpoints outside
    `limit` (min/max, degC) and ramp rates above its `max_rate` (degC/min). `client`: what requests go
    through (drivers/modbus_client.py); None: a pymodbus client on the wire to `url`."""

    def __init__(self, url: str, limit: Limit, *, name: str = "loop", encoding: Encoding = "scaled",
                 decimals: int = 1, timeout_s: float = 1.0, read_retries: int = 2,
                 client: ModbusClient | None = None) -> None:
        if encoding not in ("scaled", "float32"):
            raise ValueError(f"encoding must be 'scaled' or 'float32', got {encoding!r}")
        if not 0 <= decimals <= 4:
            raise ValueError(f"decimals must be 0-4 (the controller's display resolution), got {decimals!r}")
        self.url, self.link, self.limit, self.name = url, parse_modbus_url(url), limit, name
        self.encoding, self.decimals, self.read_retries = encoding, decimals, read_retries
        self.client = client if client is not None else pymodbus_client(self.link, timeout_s)
        self._journal: Journal | None = None
        self._lock = threading.Lock()  # an abort's safe state from another thread must not interleave

    # -- typed API -------------------------------------------------------------------------------

    def read_process_value(self) -> float:
        return self._read_value(PV)

    def read_target_setpoint(self) -> float:
        return self._read_value(TARGET_SP)

    def read_working_setpoint(self) -> float:
        """Where the ramp is now: moves towards the target setpoint at the setpoint rate limit."""
        return self._read_value(WORKING_SP)

    def read_output_power(self) -> float:
        return self._read_value(OUTPUT_POWER)

    def read_ramp_rate(self) -> float:
        return self._read_value(RAMP_RATE)

    def read_alarms(self) -> Alarms:
        return Alarms(alarm_1=self._read_raw(ALARM_1_STATUS, 1)[0] != 0,
                      manual=self._read_raw(AUTO_MANUAL, 1)[0] != 0)

    def write_setpoint(self, value: float) -> None:
        """Send the target setpoint, refused (EnvelopeViolation, nothing sent) outside `limit`."""
        self._write_value(TARGET_SP, value, "setpoint", lambda v: self.limit.check(self.name, v))

    def write_ramp_rate(self, rate_per_min: float) -> None:
        """Send the setpoint rate limit (degC/min), refused unless 0 < rate <= the limit's max_rate: a
        Eurotherm reads 0 as "no limit", which no caller may ask for by accident."""
        limit = self.limit.max_rate if self.limit.max_rate is not None else math.inf

        def check(rate: float) -> None:
            if not (isinstance(rate, int | float) and math.isfinite(rate) and 0 < rate <= limit):
                raise EnvelopeViolation(f"{self.name} ramp rate", rate, f"must be > 0 and at most max_rate {limit} degC/min")

        self._write_value(RAMP_RATE, rate_per_min, "ramp rate", check)

    def set_journal(self, journal: Journal | None) -> None:
        self._journal = journal

    def open(self) -> None:
        if not self.client.connected and not self.client.connect():
            raise InstrumentFault(f"{self.name}: cannot connect to the controller at {self.url}")

    def close(self) -> None:
        self.client.close()

    def resolution(self) -> float:
        """The smallest step the chosen encoding carries (what a read-back may differ by)."""
        return 10.0 ** -self.decimals if self.encoding == "scaled" else 0.0

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, value: float) -> list[int]:
        """The register values that carry `value` in this client's encoding."""
        if self.encoding == "float32":
            high, low = struct.unpack(">HH", struct.pack(">f", value))
            return [high, low]
        scaled = round(value * 10**self.decimals)
        if not -32768 <= scaled <= 32767:
            raise EnvelopeViolation(self.name, value, f"does not fit a 16-bit register with {self.decimals} "
                                    "decimal(s); use encoding: float32 or fewer decimals")
        return [scaled & 0xFFFF]

    def decode(self, registers: list[int]) -> float:
        if self.encoding == "float32":
            return float(struct.unpack(">f", struct.pack(">HH", *registers))[0])
        raw = registers[0] - 0x10000 if registers[0] >= 0x8000 else registers[0]
        return raw / 10**self.decimals

    def _address(self, parameter: int) -> tuple[int, int]:
        return (FLOAT_BASE + 2 * parameter, 2) if self.encoding == "float32" else (parameter, 1)

    # -- requests --------------------------------------------------------------------------------

    def _read_value(self, parameter: int) -> float:
        address, count = self._address(parameter)
        return self.decode(self._read_raw(address, count))

    def _read_raw(self, address: int, count: int) -> list[int]:
        """Holding registers, retried on no reply (a read changes nothing); an exception reply is final."""
        tries = self.read_retries + 1
        for attempt in range(1, tries + 1):
            reply = self._request("read", address, count=count)
            if reply is not None:
                return reply
            if attempt == tries:
                break
        raise InstrumentFault(f"{self.name}: no reply from the controller at {self.url} to reading register "
                              f"{address} ({tries} tries); check the cable, the unit id and the baud rate")

    def _write_value(self, parameter: int, value: float, what: str, check: Callable[[float], None]) -> None:
        """`check` the value and what its registers carry (a value rounded to the display's decimals
        could land outside), then send it once; without a reply, read it back instead of re-sending."""
        address, _ = self._address(parameter)
        try:
            check(value)
            registers = self.encode(float(value))
            check(self.decode(registers))
        except EnvelopeViolation as e:
            self._note("tx", f"REFUSED {e}")
            raise
        if self._request("write", address, values=registers) is not None:
            return
        # No reply: the write may or may not have landed. Never send it again; ask what the loop holds.
        held, sent = self.decode(self._read_raw(address, len(registers))), self.decode(registers)
        if held == sent:
            self._note("rx", f"[{what} write unanswered; read back {held:g}: it landed]")
            return
        raise InstrumentFault(f"{self.name}: the {what} write of {sent:g} went unanswered and the controller "
                              f"holds {held:g}; not re-sent. Check the controller before going on")

    def _request(self, kind: str, address: int, *, count: int = 1, values: list[int] | None = None) -> list[int] | None:
        """One request; its registers (a write: those written), None on no reply. InstrumentFault on an
        exception reply (the controller refused: bad address, read-only parameter, value out of range)."""
        unit = self.link.unit
        self._note("tx", f"unit {unit} READ {address} x{count}" if kind == "read" else f"unit {unit} WRITE {address} {values}")
        with self._lock:
            try:
                self.open()
            except InstrumentFault:
                self._note("rx", "[cannot connect: nothing was sent]")
                raise
            try:
                if kind == "read":
                    reply = self.client.read_holding_registers(address, count=count, device_id=unit)
                elif values is not None and len(values) == 1:
                    reply = self.client.write_register(address, values[0], device_id=unit)
                else:
                    reply = self.client.write_registers(address, values or [], device_id=unit)
            except (ModbusException, OSError) as e:
                self._note("rx", f"[no reply: {e}]")
                self.client.close()  # a half-read reply must not be taken for the next one's
                return None
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            self._note("rx", f"[exception {code}]")
            raise InstrumentFault(f"{self.name}: the controller at {self.url} refused {kind} of register {address}: "
                                  f"Modbus exception {code} ({_EXCEPTIONS.get(code or 0, 'unknown')})")
        registers = list(reply.registers) if kind == "read" else list(values or [])
        self._note("rx", f"unit {unit} {address} = {registers}")
        return registers

    def _note(self, direction: str, text: str) -> None:
        if self._journal is not None:
            self._journal(direction, f"{self.name} {text}")


_EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
               6: "device busy"}

