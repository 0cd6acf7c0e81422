"""Serve a simulated instrument the way the real one is reached: behind a pseudo-terminal, a TCP port,
or (for `sim://MODEL` connections) an in-process object that looks like a pyserial port.

A model is any object with `handle(line) -> str | bytes | None` (None: the command has no reply) and
optionally `reset()`. A `Device` wraps it with framing (commands end in LF, a trailing CR is ignored;
replies end in the configured terminator), an optional echo, and fault injection. Servers move bytes
between a `Device` and the wire, honouring reply delays in order, as a single-threaded instrument would.

Time: in an emulator process the model sees wall time scaled by `time_scale` (3600 = an emulated
hour per second); in process it sees the trial's own clock (virtual time), handed over by the transport.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Protocol, Self, runtime_checkable

import serial

from closedloop.drivers.base import Clock
from closedloop.simulators.faults import Emission, FaultInjector

_POLL_S = 0.05  # how often a server looks at its stop flag while idle


class LineModel(Protocol):
    """A simulated instrument's command interpreter: one command line in, its reply out (None: no reply)."""

    def handle(self, line: str) -> str | bytes | None: ...


# Builds a model on a clock with a seed (the wire emulators in `simulators.registry`).
ModelFactory = Callable[[Clock, int], LineModel]


@runtime_checkable
class Resettable(Protocol):
    """A model that can lose its state the way a power-cycled instrument does (the `reset` fault)."""

    def reset(self) -> None: ...


class ScaledClock:
    """Wall time since start, multiplied by `scale`: an emulator process's sense of time."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be > 0, got {scale}")
        self.scale = scale
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.scale)


class FollowedClock:
    """The clock of whichever trial is talking to an in-process device; its own frozen time until then."""

    def __init__(self) -> None:
        self._target: Clock | None = None
        self._idle_now = 0.0

    def follow(self, clock: Clock) -> None:
        self._target = clock

    def now(self) -> float:
        return self._target.now() if self._target is not None else self._idle_now

    def sleep(self, seconds: float) -> None:
        if self._target is not None:
            self._target.sleep(seconds)
        else:
            self._idle_now += max(0.0, seconds)


class Device:
    """A model with framing and faults: command lines in, emissions (bytes, delay, unplug) out."""

    def __init__(
        self,
        model: LineModel,
        *,
        faults: FaultInjector | None = None,
        terminator: str = "\r\n",
        encoding: str = "ascii",
        echo: bool = False,
    ) -> None:
        self.model = model
        self.faults = faults or FaultInjector()
        self.terminator = terminator.encode(encoding)
        self.encoding = encoding
        self.echo = echo
        self.commands: list[str] = []  # every line received, in order (tests assert on it)
        self._held = b""  # a reply held back by late_reply, sent before the next one

    def receive(self, inbox: bytearray) -> Iterator[Emission]:
        """Consume the complete lines in `inbox`, yielding one emission per command."""
        while (end := inbox.find(b"\n")) >= 0:
            raw = bytes(inbox[:end]).rstrip(b"\r")
            del inbox[: end + 1]
            if raw.strip():
                yield self.command(raw.decode(self.encoding, errors="replace"))

    def command(self, line: str) -> Emission:
        self.commands.append(line)
        number = len(self.commands)
        fault = self.faults.before_command(number, line)
        held, self._held = self._held, b""
        if fault == "reset":
            if isinstance(self.model, Resettable):
                self.model.reset()
            return Emission()  # the output queue is lost with the reset
        if fault == "unplug":
            return Emission(unplug_s=self.faults.unplug_s)
        echo = line.encode(self.encoding) + self.terminator if self.echo else b""
        reply = self.model.handle(line)
        if reply is None:
            return Emission(held + echo)
        body = reply if isinstance(reply, bytes) else reply.encode(self.encoding)
        if held:
            # A late reply goes out right before this one: replies are late by one, never by more.
            return Emission(held + echo + body + self.terminator)
        emission, hold = self.faults.on_reply(number, line, body, self.terminator)
        if hold:
            self._held = body + self.terminator
        return Emission(echo + emission.data, delay_s=emission.delay_s)


class EmulatedPort:
    """A pyserial-like port with the device inside it, for `sim://` connections in virtual time.

    The device answers inside `write`, so a read never waits: `replies_are_synchronous` tells the
    transport that an empty read means no reply is coming. A delayed reply (slow_reply) arrives after
    the current exchange, just before the next reply; an unplug fails reads until the port is reopened,
    and the first reopen fails too (the device needs a moment to come back).
    """

    replies_are_synchronous = True

    def __init__(self, device: Device, clock: FollowedClock) -> None:
        self.device = device
        self.clock = clock
        self.is_open = False
        self.timeout: float | None = None
        self._from_host = bytearray()
        self._to_host = bytearray()
        self._delayed = bytearray()
        self._unplugged = False
        self._failed_reopens_left = 0

    def follow_clock(self, clock: Clock) -> None:
        self.clock.follow(clock)

    def open(self) -> None:
        if self._failed_reopens_left > 0:
            self._failed_reopens_left -= 1
            raise serial.SerialException("emulated device is unplugged")
        self._unplugged = False
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        self._from_host.clear()
        self._to_host.clear()

    def _require_link(self) -> None:
        if not self.is_open:
            raise serial.PortNotOpenError()
        if self._unplugged:
            raise serial.SerialException("device disconnected (emulated unplug)")

    def write(self, data: bytes) -> int:
        self._require_link()
        self._to_host += self._delayed
        self._delayed.clear()
        self._from_host += data
        for emission in self.device.receive(self._from_host):
            if emission.unplug_s is not None:
                self._unplugged = True
                self._failed_reopens_left = 1
                break
            (self._delayed if emission.delay_s > 0 else self._to_host).extend(emission.data)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._require_link()
        chunk = bytes(self._to_host[:size])
        del self._to_host[:size]
        return chunk

    @property
    def in_waiting(self) -> int:
        self._require_link()
        return len(self._to_host)

    def reset_input_buffer(self) -> None:
        self._to_host.clear()


def emulated_port(
    model: ModelFactory, *, seed: int = 0, faults: str = "", terminator: str = "\r\n", echo: bool = False
) -> EmulatedPort:
    """A port with `model` inside, in this process: the real driver and transport run against it, on the
    clock of whichever trial talks to it (`sim://MODEL`, see `simulators.registry`)."""
    clock = FollowedClock()
    device = Device(model(clock, seed), faults=FaultInjector(faults, seed=seed), terminator=terminator, echo=echo)
    return EmulatedPort(device, clock)


# -- servers on real file descriptors -------------------------------------------------------------


class _Link(Protocol):
    def fileno(self) -> int: ...

    def recv(self) -> bytes: ...

    def send(self, data: bytes) -> None: ...


class _PtyLink:
    def __init__(self, master: int) -> None:
        self.master = master

    def fileno(self) -> int:
        return self.master

    def recv(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""  # EIO: no slave side left

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]


class _SocketLink:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def fileno(self) -> int:
        return self.conn.fileno()

    def recv(self) -> bytes:
        try:
            return self.conn.recv(4096)
        except OSError:
            return b""

    def send(self, data: bytes) -> None:
        # If the client went away, the next recv notices; nothing to do here.
        with contextlib.suppress(OSError):
            self.conn.sendall(data)


def _serve_link(device: Device, link: _Link, stop: threading.Event, *, can_unplug: bool) -> float | None:
    """Serve one connection until `stop`, the peer leaves (None), or an unplug fault (its duration).

    Where a link cannot be unplugged (a pty cannot reappear at the same path) the device goes silent
    for that long instead, discarding what it is sent.
    """
    inbox = bytearray()
    outbox: list[tuple[float, bytes]] = []  # (due time, bytes) in sending order
    silent_until = 0.0
    while not stop.is_set():
        now = time.monotonic()
        while outbox and outbox[0][0] <= now:
            link.send(outbox.pop(0)[1])
        wait = min(_POLL_S, outbox[0][0] - now) if outbox else _POLL_S
        readable, _, _ = select.select([link], [], [], max(0.0, wait))
        if not readable:
            continue
        data = link.recv()
        if not data:
            return None
        if time.monotonic() < silent_until:
            continue
        inbox += data
        for emission in device.receive(inbox):
            if emission.unplug_s is not None:
                if can_unplug:
                    return emission.unplug_s
                silent_until = time.monotonic() + emission.unplug_s
                outbox.clear()
                inbox.clear()
                break
            if emission.data:
                # One reply at a time, in order: a slow reply also delays the ones behind it.
                due = max(time.monotonic() + emission.delay_s, outbox[-1][0] if outbox else 0.0)
                outbox.append((due, emission.data))
    return None


class _Server(ABC):
    """Runs `serve_forever` in the caller's thread, or in a daemon thread via `start()`/`with`."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def serve_forever(self) -> None: ...

    def shutdown(self) -> None:
        """Ask `serve_forever` to return (safe from a signal handler)."""
        self._stop.set()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PtyServer(_Server):
    """The device on the master side of a new pseudo-terminal; open `path` as a serial port."""

    def __init__(self, device: Device) -> None:
        super().__init__()
        self.device = device
        self._master, self._slave = os.openpty()
        # Raw mode: no echo and no CR/LF translation, so bytes cross exactly as sent, like a real UART.
        # Keeping our slave descriptor open also keeps the master readable after a client closes.
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.url = self.path

    def serve_forever(self) -> None:
        _serve_link(self.device, _PtyLink(self._master), self._stop, can_unplug=False)

    def close(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class TcpServer(_Server):
    """The device behind a TCP port on `host`, one client at a time, like a serial-to-Ethernet bridge.
    An unplug closes the client and refuses connections for a while, then listens again on the same port."""

    def __init__(self, device: Device, port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.device = device
        self.host = host
        self._listener: socket.socket | None = self._listen(port)
        self.port = self._listener.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(1)
        return listener

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            if self._listener is None:
                try:
                    self._listener = self._listen(self.port)
                except OSError:
                    self._stop.wait(_POLL_S)  # the old socket is still being torn down; try again
                    continue
            readable, _, _ = select.select([self._listener], [], [], _POLL_S)
            if not readable:
                continue
            conn, _ = self._listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                down_for = _serve_link(self.device, _SocketLink(conn), self._stop, can_unplug=True)
            finally:
                conn.close()
            if down_for is not None:
                self._listener.close()
                self._listener = None
                self._stop.wait(down_for)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
