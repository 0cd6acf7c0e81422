"""The Modbus temperature-controller client against the real pymodbus server of the emulator, over TCP on
127.0.0.1: both encodings, refusals that never reach the server (asserted on the chamber's own record and
registers), exception replies, a silent controller, the never-re-sent write, and the journal."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator

import pytest

from closedloop.drivers.base import EnvelopeViolation, InstrumentFault, Limit
from closedloop.drivers.mbe import MBE_ENVELOPE
from closedloop.drivers.modbus_controller import (
    RAMP_RATE,
    TARGET_SP,
    Alarms,
    ModbusController,
)
from closedloop.drivers.modbus_url import parse_modbus_url
from closedloop.simulators.emulator import FollowedClock
from closedloop.simulators.mbe.wire import MbeWireModel
from closedloop.simulators.modbus_controller import ModbusEmulator, mbe_rack

RU = MBE_ENVELOPE.limits["ru_cell_temp"]


class Rack:
    """The chamber model, its Modbus server, and a virtual clock the test moves."""

    def __init__(self) -> None:
        self.clock = FollowedClock()
        self.model = MbeWireModel(self.clock, seed=2)
        self.server = ModbusEmulator(mbe_rack(self.model)).start_tcp()
        self.journal: list[tuple[str, str]] = []

    def client(self, unit: int = 2, limit: Limit = RU, **options: object) -> ModbusController:
        c = ModbusController(self.server.url(unit), limit, name="RU_CELL", **options)  # type: ignore[arg-type]
        c.set_journal(lambda d, t: self.journal.append((d, t)))
        return c

    @property
    def ru(self):  # the Ru cell loop behind unit 2
        return self.model.chamber.controllers["ru_cell_temp"]


@pytest.fixture
def rack() -> Iterator[Rack]:
    r = Rack()
    yield r
    r.server.close()


@pytest.mark.parametrize(("encoding", "decimals", "target"), [("scaled", 1, 1877.5), ("float32", 1, 1877.25)])
def test_a_ramp_set_over_modbus_is_the_chambers_and_reads_back_in_either_encoding(
        rack: Rack, encoding: str, decimals: int, target: float) -> None:
    c = rack.client(encoding=encoding, decimals=decimals)
    assert c.read_target_setpoint() == 1200.0 and abs(c.read_process_value() - 1200.0) < 3
    c.write_ramp_rate(10.0)
    c.write_setpoint(target)
    assert rack.ru.target == target and [(r.field, r.value) for r in rack.model.record] == [("RATE", 10.0), ("SP", target)]
    rack.clock.sleep(600.0)  # ten minutes at 10 degC/min: the working setpoint is 100 degC up the ramp
    assert c.read_working_setpoint() == pytest.approx(1300.0, abs=0.1)
    assert c.read_target_setpoint() == target and c.read_ramp_rate() == 10.0
    pv = c.read_process_value()
    assert 1250.0 < pv < 1300.0  # lagging the ramp
    assert 0.0 < c.read_output_power() <= 100.0
    assert c.read_alarms() == Alarms(alarm_1=False, manual=False)
    c.close()


def test_scaled_registers_carry_the_displays_decimals(rack: Rack) -> None:
    c = rack.client(decimals=1)
    c.write_setpoint(1877.46)  # one decimal on the wire: 18775
    assert rack.ru.target == 1877.5
    assert ("tx", "RU_CELL unit 2 WRITE 2 [18775]") in rack.journal
    with pytest.raises(EnvelopeViolation, match="does not fit a 16-bit register"):
        rack.client(decimals=2).write_setpoint(1877.0)  # 187700 > 32767
    # What is checked is what the register carries: 100.06 is inside, the 100.1 it rounds to is not.
    odd_limit = Limit(min=20.0, max=100.06, unit="degC", max_rate=30.0)
    with pytest.raises(EnvelopeViolation, match="100.1: above the maximum 100.06"):
        rack.client(unit=3, limit=odd_limit).write_setpoint(100.06)
    assert [r.value for r in rack.model.record] == [1877.5]


@pytest.mark.parametrize("value", [2000.5, 19.0, math.nan, math.inf])
def test_a_setpoint_outside_the_envelope_never_reaches_the_controller(rack: Rack, value: float) -> None:
    c = rack.client(encoding="float32")
    with pytest.raises(EnvelopeViolation):
        c.write_setpoint(value)
    assert rack.model.record == [] and rack.ru.target == 1200.0
    assert c.read_target_setpoint() == 1200.0  # the register itself, over the wire
    assert rack.journal[0][0] == "tx" and rack.journal[0][1].startswith("RU_CELL REFUSED RU_CELL=")


@pytest.mark.parametrize("rate", [0.0, -1.0, 10.5, math.nan])
def test_a_ramp_rate_of_zero_means_no_limit_and_is_refused_with_any_above_max_rate(rack: Rack, rate: float) -> None:
    c = rack.client()
    with pytest.raises(EnvelopeViolation, match="max_rate 10.0"):
        c.write_ramp_rate(rate)
    assert rack.model.record == [] and c.read_ramp_rate() == 5.0  # the factory value, untouched


def test_exception_replies_become_instrument_faults(rack: Rack) -> None:
    c = rack.client()
    with pytest.raises(InstrumentFault, match="illegal data address"):
        c._request("write", 1, values=[12000])  # PV is read-only
    with pytest.raises(InstrumentFault, match="illegal data address"):
        c._read_raw(1000, 1)  # not in the map
    float_client = rack.client(encoding="float32")
    with pytest.raises(InstrumentFault, match="illegal data address"):
        float_client._request("write", 0x8000 + 2 * TARGET_SP, values=[0x44EA])  # half a float
    assert rack.model.record == []
    assert ("rx", "RU_CELL [exception 2]") in rack.journal


def test_an_alarm_and_manual_mode_are_read_as_such(rack: Rack) -> None:
    c = rack.client(encoding="float32")
    c._request("write", 0x8000 + 2 * 13, values=c.encode(1100.0))  # alarm 1 setpoint below the idle PV
    c._request("write", 273, values=[1])
    alarms = c.read_alarms()
    assert alarms == Alarms(alarm_1=True, manual=True) and alarms.active


def test_the_journal_holds_every_request_and_reply(rack: Rack) -> None:
    c = rack.client()
    c.write_ramp_rate(8.0)
    assert c.read_ramp_rate() == 8.0
    assert rack.journal == [("tx", "RU_CELL unit 2 WRITE 35 [80]"), ("rx", "RU_CELL unit 2 35 = [80]"),
                            ("tx", "RU_CELL unit 2 READ 35 x1"), ("rx", "RU_CELL unit 2 35 = [80]")]
    assert RAMP_RATE == 35


class TcpPeer:
    """A TCP port on 127.0.0.1 serving each connection with `serve(conn)` on a thread of its own."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


class Silent(TcpPeer):
    """Accepts and never answers: a controller with the wrong unit id or a dead bridge."""

    def serve(self, conn: socket.socket) -> None:
        while conn.recv(256):
            pass


def test_reads_are_retried_and_an_unanswered_write_is_read_back_never_sent_twice() -> None:
    silent = Silent()
    journal: list[tuple[str, str]] = []
    c = ModbusController(f"modbus+tcp://127.0.0.1:{silent.port}?unit=1", RU, name="RU_CELL", timeout_s=0.2,
                         read_retries=2)
    c.set_journal(lambda d, t: journal.append((d, t)))
    with pytest.raises(InstrumentFault, match=r"no reply .* \(3 tries\)"):
        c.read_process_value()
    assert [t for d, t in journal if d == "tx"] == ["RU_CELL unit 1 READ 1 x1"] * 3
    journal.clear()
    with pytest.raises(InstrumentFault, match="no reply"):
        c.write_setpoint(1850.0)  # unanswered, then its read-back is unanswered too
    sent = [t for d, t in journal if d == "tx"]
    assert sent == ["RU_CELL unit 1 WRITE 2 [18500]"] + ["RU_CELL unit 1 READ 2 x1"] * 3
    c.close()
    silent.sock.close()


@pytest.mark.parametrize(("url", "message"), [
    ("tcp://127.0.0.1:502", "unknown scheme 'tcp'"),
    ("modbus+tcp://127.0.0.1:502", "unit must be a whole number 1-247"),
    ("modbus+tcp://127.0.0.1:502?unit=0", "unit must be a whole number 1-247, got '0'"),
    ("modbus+tcp://:502?unit=1", "no host"),
    ("modbus+tcp://h:502?unit=1&baudrate=9600", r"unknown setting\(s\) \['baudrate'\]"),
    ("modbus+rtu://ttyUSB0?unit=1", "three slashes"),
    ("modbus+rtu:///dev/ttyUSB0?unit=1&parity=X", "parity must be N, E or O"),
])
def test_a_bad_url_says_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        parse_modbus_url(url)
    assert "modbus+tcp://HOST:PORT?unit=N" in str(e.value) or "parity" in str(e.value)


def test_urls_parse_into_links() -> None:
    tcp = parse_modbus_url("modbus+tcp://10.0.0.5:5020?unit=3")
    assert (tcp.transport, tcp.host, tcp.port, tcp.unit) == ("tcp", "10.0.0.5", 5020, 3)
    rtu = parse_modbus_url("modbus+rtu:///dev/ttyUSB1?unit=1&baudrate=19200&parity=E")
    assert (rtu.transport, rtu.device, rtu.baudrate, rtu.parity, rtu.stopbits) == ("rtu", "/dev/ttyUSB1", 19200, "E", 1)


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


class LossyLink(TcpPeer):
    """A TCP relay in front of the emulator that loses writes on the way: their replies (`lose="reply"`,
    the write landed) or the requests themselves (`lose="request"`). Reads pass both ways."""

    def __init__(self, upstream_port: int, lose: str) -> None:
        self.upstream, self.lose = upstream_port, lose
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            while header := _recv_exactly(conn, 7):  # MBAP: transaction, protocol, length, unit
                body = _recv_exactly(conn, int.from_bytes(header[4:6], "big") - 1)
                is_write = body[0] in (6, 16)
                if is_write and self.lose == "request":
                    continue
                up.sendall(header + body)
                reply = _recv_exactly(up, 7)
                reply += _recv_exactly(up, int.from_bytes(reply[4:6], "big") - 1)
                if not is_write:
                    conn.sendall(reply)


@pytest.mark.parametrize("lose", ["reply", "request"])
def test_a_write_without_a_reply_is_read_back_and_never_sent_again(rack: Rack, lose: str) -> None:
    link = LossyLink(parse_modbus_url(rack.server.url(2)).port, lose)
    c = ModbusController(f"modbus+tcp://127.0.0.1:{link.port}?unit=2", RU, name="RU_CELL", timeout_s=0.3)
    c.set_journal(lambda d, t: rack.journal.append((d, t)))
    if lose == "reply":
        c.write_setpoint(1850.0)  # the read-back shows it landed: done
        assert ("rx", "RU_CELL [setpoint write unanswered; read back 1850: it landed]") in rack.journal
    else:
        with pytest.raises(InstrumentFault, match="went unanswered and the controller holds 1200; not re-sent"):
            c.write_setpoint(1850.0)
    assert [t for d, t in rack.journal if d == "tx"] == ["RU_CELL unit 2 WRITE 2 [18500]", "RU_CELL unit 2 READ 2 x1"]
    assert [r.value for r in rack.model.record] == ([1850.0] if lose == "reply" else [])
    c.close()
    link.sock.close()


def test_the_same_controller_over_modbus_rtu_on_a_serial_line() -> None:
    clock = FollowedClock()
    model = MbeWireModel(clock, seed=2)
    server = ModbusEmulator(mbe_rack(model)).start_rtu()
    try:
        assert server.url(3).startswith("modbus+rtu:///dev/") and parse_modbus_url(server.url(3)).transport == "rtu"
        substrate = ModbusController(server.url(3), MBE_ENVELOPE.limits["substrate_temp"], name="SUBSTRATE",
                                     encoding="float32")
        substrate.write_ramp_rate(30.0)
        substrate.write_setpoint(758.0)
        assert model.chamber.controllers["substrate_temp"].target == 758.0
        clock.sleep(60.0)
        assert substrate.read_working_setpoint() == pytest.approx(230.0)  # 200 + 30 degC/min for a minute
        with pytest.raises(EnvelopeViolation):
            substrate.write_setpoint(950.0)
        with pytest.raises(InstrumentFault, match="illegal data address"):
            substrate._read_raw(7, 1)
        assert [r.value for r in model.record] == [30.0, 758.0]
        substrate.close()
    finally:
        server.close()


def test_a_controller_nobody_listens_for_is_a_fault_that_says_so(rack: Rack) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    c = ModbusController(f"modbus+tcp://127.0.0.1:{port}?unit=2", RU, name="RU_CELL", timeout_s=0.3)
    c.set_journal(lambda d, t: rack.journal.append((d, t)))
    with pytest.raises(InstrumentFault, match="cannot connect to the controller at modbus"):
        c.write_setpoint(1850.0)
    assert rack.journal == [("tx", "RU_CELL unit 2 WRITE 2 [18500]"), ("rx", "RU_CELL [cannot connect: nothing was sent]")]

