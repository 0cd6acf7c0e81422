"""SerialTransport over real links: loop://, a real pseudo-terminal and a real TCP socket."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import pytest

from closedloop.drivers.base import InstrumentFault
from closedloop.drivers.transport import SerialTransport, TransportSettings
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock, TcpServer
from closedloop.simulators.faults import FaultInjector
from closedloop.simulators.furnace import FurnaceModel

FAST = TransportSettings(
    read_terminator="\r\n", write_terminator="\r\n", timeout=0.25, retries=2, retry_backoff=0.02, reconnect_backoff=0.05
)


class TaggedEcho:
    """Answers `Q <tag>` with `A <tag>` after a short busy time, so interleaved exchanges would show."""

    def handle(self, line: str) -> str | None:
        if line.startswith("Q "):
            time.sleep(0.0005)
            return "A " + line[2:]
        return None


def furnace(faults: str = "", **kwargs: float) -> Device:
    return Device(FurnaceModel(ScaledClock(3600.0), seed=1), faults=FaultInjector(faults, seed=1, **kwargs))


def test_loop_url_round_trip_is_journaled() -> None:
    journal: list[tuple[str, str]] = []
    link = SerialTransport("loop://", TransportSettings(timeout=0.2), journal=lambda d, t: journal.append((d, t)))
    # loop:// sends every byte straight back: the "reply" is our own command.
    assert link.query("*IDN?") == "*IDN?"
    link.write("INIT")
    assert journal == [("tx", "*IDN?"), ("rx", "*IDN?"), ("tx", "INIT")]
    link.close()
    assert not link.is_open


def test_query_over_a_real_pty_with_crlf_framing() -> None:
    with PtyServer(furnace()) as server:
        assert server.path.startswith("/dev/pts/")
        link = SerialTransport(server.path, FAST)
        assert link.query("*IDN?") == "KILNCO,TF-1200,SN001,1.0"
        link.write("SOUR:TEMP 321.5")
        assert link.query("SOUR:TEMP?") == "321.5"
        link.close()


@pytest.mark.parametrize("terminator", ["\n", "\r", ";"])
def test_read_and_write_terminators_are_configurable(terminator: str) -> None:
    device = Device(FurnaceModel(ScaledClock(), seed=1), terminator=terminator)
    with PtyServer(device) as server:
        # The emulator reads LF-terminated commands; replies end in `terminator`.
        link = SerialTransport(server.path, replace(FAST, read_terminator=terminator, write_terminator="\n"))
        assert link.query("*IDN?") == "KILNCO,TF-1200,SN001,1.0"
        assert link.query("SYST:ERR?") == '0,"No error"'
        link.close()


def test_wrong_read_terminator_times_out_as_a_partial_line_and_names_the_terminator() -> None:
    with PtyServer(Device(FurnaceModel(ScaledClock(), seed=1), terminator="\n")) as server:
        link = SerialTransport(server.path, replace(FAST, retries=0))
        start = time.monotonic()
        with pytest.raises(InstrumentFault, match=r"partial reply .*KILNCO.*without the terminator '\\r\\n'"):
            link.query("*IDN?")
        assert time.monotonic() - start < FAST.timeout + 0.15
        link.close()


def test_concurrent_callers_never_interleave_a_command_and_its_reply() -> None:
    with PtyServer(Device(TaggedEcho())) as server:
        link = SerialTransport(server.path, FAST)
        mismatches: list[str] = []

        def worker(worker_id: int) -> None:
            for i in range(40):
                tag = f"{worker_id}-{i}"
                reply = link.query(f"Q {tag}")
                if reply != f"A {tag}":
                    mismatches.append(f"{tag} -> {reply}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert mismatches == []
        assert len(server.device.commands) == 160
        link.close()


def test_idempotent_query_is_retried_and_recovers() -> None:
    device = furnace("no_reply:once@1")
    with PtyServer(device) as server:
        link = SerialTransport(server.path, FAST)
        assert link.query("*IDN?") == "KILNCO,TF-1200,SN001,1.0"
        assert device.commands == ["*IDN?", "*IDN?"]
        link.close()


def test_non_idempotent_query_is_sent_once_and_fails_within_the_timeout() -> None:
    device = furnace("no_reply:once@1")
    with PtyServer(device) as server:
        link = SerialTransport(server.path, FAST)
        start = time.monotonic()
        with pytest.raises(InstrumentFault, match="sent once: not idempotent"):
            link.query("FETC:RES?", idempotent=False)
        assert time.monotonic() - start < FAST.timeout + 0.15
        assert device.commands == ["FETC:RES?"]
        link.close()


def test_a_write_is_never_re_sent_when_the_link_drops_around_it() -> None:
    device = furnace("unplug:once@1", unplug_s=0.2)
    with TcpServer(device) as server:
        link = SerialTransport(server.url, replace(FAST, reconnect_attempts=6))
        link.write("INIT")  # the device drops the link on this command
        # The next exchange finds the link gone, reconnects once the device is back, and retries only itself.
        assert link.query("SYST:ERR?") == '0,"No error"'
        assert device.commands.count("INIT") == 1
        assert link.reconnects == 1
        link.close()


def test_reconnect_gives_up_after_its_attempts_with_a_clear_fault() -> None:
    server = TcpServer(furnace()).start()
    settings = replace(FAST, reconnect_attempts=3, reconnect_backoff=0.05)
    link = SerialTransport(server.url, settings)
    assert link.query("*IDN?").startswith("KILNCO")
    server.stop()  # the bridge is gone for good
    start = time.monotonic()
    with pytest.raises(InstrumentFault, match="could not reopen it in 3 attempts"):
        link.query("*IDN?")
    # back-off 0.05 + 0.1 + 0.2 s, plus at most one read timeout.
    assert time.monotonic() - start < 0.35 + FAST.timeout + 0.3
    link.close()


def test_stale_input_is_drained_before_a_query_and_journaled() -> None:
    with PtyServer(furnace()) as server:
        journal: list[tuple[str, str]] = []
        link = SerialTransport(server.path, FAST, journal=lambda d, t: journal.append((d, t)))
        link.open()
        os.write(server._master, b"stale junk\r\n")  # an unsolicited line, e.g. a power-on banner
        time.sleep(0.05)
        assert link.query("*IDN?") == "KILNCO,TF-1200,SN001,1.0"
        assert any("discarded stale input" in text and "stale junk" in text for _, text in journal)
        link.close()


def test_echo_check_discards_lines_that_arrive_before_our_echo() -> None:
    device = Device(FurnaceModel(ScaledClock(), seed=1), echo=True, faults=FaultInjector("late_reply:once@1"))
    with PtyServer(device) as server:
        link = SerialTransport(server.path, replace(FAST, echo=True, retries=0))
        with pytest.raises(InstrumentFault, match="no reply"):
            link.query("SOUR:TEMP?")  # its reply is held back...
        # ...and arrives ahead of the echo of the next command, so the echo check throws it away.
        assert link.query("*IDN?") == "KILNCO,TF-1200,SN001,1.0"
        link.write("SOUR:TEMP 300")
        assert link.query("SOUR:TEMP?") == "300.0"
        link.close()


def test_binary_block_query_over_tcp() -> None:
    model = FurnaceModel(ScaledClock(3600.0), seed=2)
    with TcpServer(Device(model)) as server:
        link = SerialTransport(server.url, FAST)
        for command in ("SOUR:TEMP 100", "SOUR:DWEL 60", "INIT"):
            link.write(command)
        deadline = time.monotonic() + 5
        while link.query("STAT:OPER?") != "IDLE" and time.monotonic() < deadline:
            time.sleep(0.02)
        payload = link.query_block("TRAC:DATA?")
        assert len(payload) == 8 * 4  # eight float32 probe readings
        assert link.query("*IDN?").startswith("KILNCO")  # the block's terminator did not linger
        link.close()


def test_unknown_url_scheme_is_bad_input_naming_the_url() -> None:
    with pytest.raises(ValueError, match=r"'bogus://x'.*socket://HOST:PORT"):
        SerialTransport("bogus://x")


def test_missing_device_path_is_an_instrument_fault_naming_it() -> None:
    link = SerialTransport("/dev/does-not-exist-closedloop", FAST)
    with pytest.raises(InstrumentFault, match="cannot open /dev/does-not-exist-closedloop"):
        link.query("*IDN?")
