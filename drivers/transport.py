"""A line-oriented serial link that never hangs, never re-sends a setpoint and never hands back the
answer to a different command.

The port comes from pyserial's `serial_for_url` (a device path, `socket://host:port`, `loop://`), from
pyvisa (`visa://RESOURCE`, drivers.visa_port), or is any object with the same few methods (`Port`),
such as an in-process emulator. On top of it:

- framing: a command is written with the write terminator; a reply is read up to the read terminator
  against a deadline. No reply, a partial line or undecodable bytes raise `InstrumentFault`;
- retries with back-off, only for commands declared idempotent (queries). A set or a start is sent
  at most once: if the link drops around it nobody can tell whether it arrived;
- reconnect when the port vanishes (USB unplugged, TCP bridge restarted), with back-off up to a limit;
- a stale-reply guard: pending input is drained before each query; after timed-out exchanges the
  next call first waits out their late replies; a reply followed by more bytes (two answers for one
  command) is refused; an optional echo check discards lines until the instrument echoes our command;
- a lock, so concurrent callers never interleave a command and its reply;
- a journal callback `journal(direction, text)`, direction "tx" or "rx". Bytes the guard throws away
  and link events are journaled as "rx" lines in square brackets, so the record shows what happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import serial

from closedloop.drivers.base import Clock, InstrumentFault
from closedloop.drivers.scpi import ScpiParseError, block_extent

Journal = Callable[[str, str], None]

# Longest single blocking read: the overall deadline is enforced by our loop, so waits end on time
# without reconfiguring the port's timeout (a termios call on real serial ports).
_READ_SLICE_S = 0.02


class Port(Protocol):
    """The part of a pyserial `Serial` the transport uses."""

    is_open: bool
    timeout: float | None

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int = 1) -> bytes: ...

    @property
    def in_waiting(self) -> int: ...

    def reset_input_buffer(self) -> None: ...


@dataclass(frozen=True)
class TransportSettings:
    """Line settings and error handling; times in seconds."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"  # pyserial letters: N, E, O, M, S
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    encoding: str = "ascii"
    read_terminator: str = "\n"
    write_terminator: str = "\n"
    timeout: float = 2.0
    write_timeout: float = 2.0
    retries: int = 2  # extra attempts for idempotent commands only
    retry_backoff: float = 0.05  # doubles per attempt
    reconnect_attempts: int = 3
    reconnect_backoff: float = 0.2  # doubles per attempt
    echo: bool = False  # the instrument echoes each command line before replying


# Ports for URL schemes pyserial does not know: scheme -> factory(url, settings). Registered by the layer
# that can build them (simulators.registry serves sim://MODEL with an in-process emulator), the way
# pyserial's own protocol handlers are, so a driver opens every link through one call.
PortFactory = Callable[[str, TransportSettings], Port]
_PORT_SCHEMES: dict[str, PortFactory] = {}


def _open_visa(url: str, settings: TransportSettings) -> Port:
    from closedloop.drivers.visa_port import open_visa_port  # pyvisa loads only when a visa:// link opens

    return open_visa_port(url, settings)


def register_port_scheme(scheme: str, factory: PortFactory) -> None:
    """Open `scheme://...` links with `factory(url, settings)`."""
    _PORT_SCHEMES[scheme] = factory


register_port_scheme("visa", _open_visa)  # visa://RESOURCE: GPIB, USBTMC, LAN, serial via pyvisa


def open_port(url: str, settings: TransportSettings) -> Port:
    """The port for `url`, not yet opened: a registered scheme's, else pyserial's `serial_for_url` (a
    device path, socket://, rfc2217://, loop://). ValueError says what to write instead."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme in _PORT_SCHEMES:
        return _PORT_SCHEMES[scheme](url, settings)
    try:
        port: Port = serial.serial_for_url(
            url,
            do_not_open=True,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            xonxoff=settings.xonxoff,
            rtscts=settings.rtscts,
            timeout=min(settings.timeout, _READ_SLICE_S),
            write_timeout=settings.write_timeout,
        )
    except (ValueError, serial.SerialException) as e:
        if sep:
            extra = "".join(f", {scheme}://..." for scheme in sorted(_PORT_SCHEMES))
            raise ValueError(f"connection {url!r}: {e}; use a device path (/dev/ttyUSB0), socket://HOST:PORT, "
                             f"rfc2217://HOST:PORT, loop://{extra}") from e
        raise ValueError(
            f"connection {url!r}: {e}; use a device path (/dev/ttyUSB0), socket://HOST:PORT or loop://"
        ) from e
    return port


class _BadReply(Exception):
    """One exchange failed in a way a retry may cure (timeout, partial line, garbage, out of step)."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


def _no_journal(direction: str, text: str) -> None:
    return None


_SHOWN_BYTES = 120  # of a long reply (a waveform cut short) in a message or the journal


def _show(data: bytes | bytearray) -> str:
    """Bytes as an escaped literal, so garbage and control characters stay readable in a message; a long
    run only by its start and length."""
    shown = repr(bytes(data[:_SHOWN_BYTES]))[1:]
    return shown if len(data) <= _SHOWN_BYTES else f"{shown}... ({len(data)} bytes)"


class SerialTransport:
    """One instrument link. `query`/`write` are safe to call from several threads."""

    def __init__(
        self,
        url: str,
        settings: TransportSettings | None = None,
        *,
        port: Port | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or TransportSettings()
        s = self.settings
        if not s.read_terminator or not s.write_terminator:
            raise ValueError("read and write terminators must not be empty (e.g. '\\n' or '\\r\\n')")
        self._read_term = s.read_terminator.encode(s.encoding)
        self._write_term = s.write_terminator.encode(s.encoding)
        self._port: Any = port if port is not None else open_port(url, self.settings)
        # In-process emulators answer inside write(): an empty read then means no reply will ever come,
        # so waiting out the timeout (or backing off) would only burn wall time in a virtual-time run.
        self._synchronous = bool(getattr(self._port, "replies_are_synchronous", False))
        self._journal: Journal = journal if journal is not None else _no_journal
        self._lock = threading.RLock()
        self._buffer = bytearray()
        self._unanswered = 0  # commands that timed out: their replies may still be on the way
        self.connections = 0  # successful opens; a driver re-identifies the instrument when it changes
        self.reconnects = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def set_journal(self, journal: Journal | None) -> None:
        """Where commands and replies are recorded from now on (the engine sets one per trial)."""
        with self._lock:
            self._journal = journal if journal is not None else _no_journal

    def follow_clock(self, clock: Clock) -> None:
        """Hand the trial's clock to a port that simulates a device in process (sim://), so the device
        sees virtual time; real ports ignore it."""
        follow = getattr(self._port, "follow_clock", None)
        if follow is not None:
            follow(clock)

    @property
    def port(self) -> Any:
        """The port underneath: a driver asks it what else is simulated with it (drivers/modbus_client.py)."""
        return self._port

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open)

    def open(self) -> None:
        """Open the port if it is not open; `InstrumentFault` says which connection failed and why."""
        with self._lock:
            if self._port.is_open:
                return
            try:
                self._open_port()
            except (serial.SerialException, OSError) as e:
                raise InstrumentFault(
                    f"cannot open {self.url}: {e}; check the device path or address, cabling and power"
                ) from e

    def _open_port(self) -> None:
        self._port.open()
        self._buffer.clear()
        self.connections += 1

    def close(self) -> None:
        with self._lock:
            try:
                if self._port.is_open:
                    self._port.close()
            except (serial.SerialException, OSError):
                pass  # closing a vanished port can fail; it is closed either way

    # -- commands --------------------------------------------------------------------------------

    def write(self, command: str, *, journal: Journal | None = None) -> None:
        """Send a command that has no reply. Sent at most once: never retried, even after a lost link."""
        with self._lock:
            self.open()
            record = journal if journal is not None else self._journal
            try:
                self._send(command, record)
                if self.settings.echo:
                    self._await_echo(command, time.monotonic() + self.settings.timeout, record)
            except serial.SerialTimeoutException as e:
                raise InstrumentFault(f"writing {command!r} to {self.url} timed out ({e}); is the line blocked?") from e
            except (serial.SerialException, OSError) as e:
                self._reconnect(f"lost while sending {command!r}: {e}", record)
                raise InstrumentFault(
                    f"the link to {self.url} was lost while sending {command!r} and has been re-established; "
                    "the command was not re-sent because it is not idempotent"
                ) from e
            except _BadReply as e:
                raise InstrumentFault(f"sending {command!r} to {self.url}: {e}") from e

    def query(self, command: str, *, idempotent: bool = True, journal: Journal | None = None) -> str:
        """Send `command` and return its reply line (without terminator).

        Idempotent queries are retried with back-off on timeouts, partial or undecodable replies and
        lost links; a non-idempotent one is sent once and any such problem raises `InstrumentFault`.
        """
        return self._exchange(command, self._read_line, idempotent, journal)

    def query_block(self, command: str, *, idempotent: bool = True, journal: Journal | None = None) -> bytes:
        """Send `command` and return the payload of its IEEE-488.2 definite-length block reply."""
        return self._exchange(command, self._read_block, idempotent, journal)

    def _exchange(self, command: str, read: Callable[[float, Journal], Any], idempotent: bool, journal: Journal | None) -> Any:
        s = self.settings
        attempts = 1 + (max(0, s.retries) if idempotent else 0)
        with self._lock:
            record = journal if journal is not None else self._journal
            self.open()
            if self._unanswered:
                self._wait_out_late_replies(record)
            problem = ""
            for attempt in range(attempts):
                if attempt:
                    self._pause(s.retry_backoff * 2 ** (attempt - 1))
                try:
                    self._drain(record)
                    self._send(command, record)
                    deadline = time.monotonic() + s.timeout
                    if s.echo:
                        self._await_echo(command, deadline, record)
                    reply = read(deadline, record)
                    self._refuse_extra_reply(command, reply, record)
                    return reply
                except _BadReply as e:
                    problem = str(e)
                    self._unanswered += int(e.timed_out)
                except serial.SerialTimeoutException as e:
                    problem = f"write timed out ({e})"
                except (serial.SerialException, OSError) as e:
                    problem = f"link lost ({e})"
                    self._reconnect(problem, record)
            tried = (f"tried {attempts} times" if attempts > 1
                     else "sent once: retries are off" if idempotent else "sent once: not idempotent, so not retried")
            raise InstrumentFault(
                f"no usable reply to {command!r} from {self.url}: {problem} ({tried}); check the instrument is on, "
                f"and the baud rate and terminators (reads up to {s.read_terminator!r})"
            )

    # -- framing ---------------------------------------------------------------------------------

    def _send(self, command: str, record: Journal) -> None:
        data = command.encode(self.settings.encoding) + self._write_term
        record("tx", command)
        self._port.write(data)

    def _fill(self, deadline: float) -> bool:
        """Read what is available (waiting at most one slice); False once the deadline has passed or an
        in-process device has nothing more to say."""
        if time.monotonic() >= deadline:
            return False
        waiting = self._port.in_waiting
        chunk = self._port.read(waiting if waiting > 0 else 1)
        if chunk:
            self._buffer += chunk
            return True
        return not self._synchronous

    def _read_line(self, deadline: float, record: Journal) -> str:
        while True:
            end = self._buffer.find(self._read_term)
            if end >= 0:
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + len(self._read_term)]
                return self._decode(raw, record)
            if not self._fill(deadline):
                if self._buffer:
                    partial = bytes(self._buffer)
                    self._buffer.clear()
                    record("rx", f"[partial line: {_show(partial)}]")
                    raise _BadReply(
                        f"partial reply {_show(partial)} without the terminator {self.settings.read_terminator!r} "
                        f"within {self.settings.timeout:g} s",
                        timed_out=True,
                    )
                raise _BadReply(f"no reply within {self.settings.timeout:g} s", timed_out=True)

    def _read_block(self, deadline: float, record: Journal) -> bytes:
        try:
            while (extent := block_extent(self._buffer)) is None:
                if not self._fill(deadline):
                    raise _BadReply(f"incomplete binary block header within {self.settings.timeout:g} s", timed_out=True)
        except ScpiParseError as e:
            garbage = bytes(self._buffer)
            self._buffer.clear()
            record("rx", f"[not a binary block: {_show(garbage[:64])}]")
            raise _BadReply(str(e)) from None
        header, length = extent
        while len(self._buffer) < header + length:
            if not self._fill(deadline):
                got = len(self._buffer) - header
                self._buffer.clear()
                raise _BadReply(f"binary block announced {length} bytes, {got} arrived within {self.settings.timeout:g} s", timed_out=True)
        payload = bytes(self._buffer[header : header + length])
        del self._buffer[: header + length]
        # IEEE-488.2 ends a block response with the terminator; it usually comes in the same burst.
        while len(self._buffer) < len(self._read_term) and self._port.in_waiting:
            self._buffer += self._port.read(self._port.in_waiting)
        if self._buffer.startswith(self._read_term):
            del self._buffer[: len(self._read_term)]
        record("rx", f"[binary block: {length} bytes]")
        return payload

    def _decode(self, raw: bytes, record: Journal) -> str:
        try:
            # A CR left over from a CRLF line read up to LF is line ending, not content.
            text = raw.decode(self.settings.encoding).rstrip("\r")
        except UnicodeDecodeError:
            record("rx", f"[undecodable: {_show(raw)}]")
            raise _BadReply(f"garbled reply {_show(raw)} is not valid {self.settings.encoding}") from None
        record("rx", text)
        return text

    def _await_echo(self, command: str, deadline: float, record: Journal) -> None:
        """Lines before our own echo answer earlier commands: discard them until the echo arrives."""
        while True:
            line = self._read_line(deadline, record)
            if line == command:
                return
            record("rx", f"[discarded: arrived before the echo of {command!r}]")

    # -- the stale-reply guard -------------------------------------------------------------------

    def _drain(self, record: Journal) -> None:
        stale = bytes(self._buffer)
        self._buffer.clear()
        while self._port.in_waiting:
            stale += self._port.read(self._port.in_waiting)
        self._port.reset_input_buffer()
        if stale:
            record("rx", f"[discarded stale input: {_show(stale)}]")

    def _wait_out_late_replies(self, record: Journal) -> None:
        """Commands that timed out may still be answered. Before the next command, wait for those answers
        (up to one timeout after the previous one arrived) and discard them, so none of them can be read
        as the reply to the next command. An instrument slower than that can only be kept in step by an
        echo check; raise the timeout if the journal shows late replies."""
        expected, self._unanswered = self._unanswered, 0
        if self._synchronous:
            return
        deadline = time.monotonic() + self.settings.timeout
        arrived = self._buffer.count(self._read_term)
        try:
            while arrived < expected and self._fill(deadline):
                if self._buffer.count(self._read_term) > arrived:
                    arrived = self._buffer.count(self._read_term)
                    deadline = time.monotonic() + self.settings.timeout
        except (serial.SerialException, OSError):
            return  # the exchange that follows finds the link down and reconnects
        self._drain(record)

    def _refuse_extra_reply(self, command: str, reply: str | bytes, record: Journal) -> None:
        """A second line right behind the reply means replies are out of step with commands (one of them
        answers an earlier command), so neither can be trusted."""
        while self._port.in_waiting:
            self._buffer += self._port.read(self._port.in_waiting)
        if self._buffer:
            extra = bytes(self._buffer)
            self._buffer.clear()
            first = f"{reply!r}" if isinstance(reply, str) else f"a {len(reply)}-byte block"
            record("rx", f"[discarded: more than one reply to {command!r}: {first}, then {_show(extra)}]")
            raise _BadReply(
                f"replies out of step: {first} and then {_show(extra)} arrived for {command!r} "
                "(one of them answers an earlier command)"
            )

    # -- lost links ------------------------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        if not self._synchronous and seconds > 0:
            time.sleep(seconds)

    def _reconnect(self, reason: str, record: Journal) -> None:
        """Close and reopen with back-off; `InstrumentFault` once the attempts are used up."""
        s = self.settings
        self.close()
        self._buffer.clear()
        record("rx", f"[link lost: {reason}; reconnecting]")
        last: Exception | None = None
        waited = 0.0
        for attempt in range(max(1, s.reconnect_attempts)):
            delay = s.reconnect_backoff * 2**attempt
            self._pause(delay)
            waited += delay
            try:
                self._open_port()
            except (serial.SerialException, OSError) as e:
                last = e
                continue
            self.reconnects += 1
            self._unanswered = 0
            record("rx", "[link re-established]")
            return
        raise InstrumentFault(
            f"lost the link to {self.url} ({reason}) and could not reopen it in {s.reconnect_attempts} attempts "
            f"over {waited:.1f} s: {last}; check the cable, power or network, then resume the campaign"
        )
