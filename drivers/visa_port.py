"""`visa://RESOURCE` links: an instrument reached through VISA (GPIB, USBTMC, LAN/VXI-11, raw TCP
sockets, serial) behind the same `Port` as a pyserial link, so `SerialTransport` keeps doing all the
framing, deadlines, retries, reconnects, stale-reply guarding and journaling.

    visa://GPIB0::12::INSTR                      pyvisa-py (`@py`), the default backend
    visa://TCPIP::192.168.1.5::5025::SOCKET
    visa://USB0::0x0957::0x1796::MY123::INSTR?backend=@ivi     a system VISA (NI-VISA, Keysight, R&S)
    visa://ASRL1::INSTR?sim=simulators/visa/furnace.yaml       a pyvisa-sim device file (backend PATH@sim)

pyvisa is imported only when such a link is checked or opened: `import closedloop` does not pay for it.

VISA reads end at a message's END, at the termination character or on a timeout, and pyvisa drops the
bytes of a read that times out. So the port never asks for more than can arrive without loss: it probes
with a one-byte read (nothing is lost when that times out), then reads the rest of what has arrived (a
serial port's byte count, else up to the END/termination character a message in progress ends with).
The termination character is the last byte of the transport's read terminator; VISA adds no write
terminator (the transport sends its own), so framing happens once, in the transport.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import serial

if TYPE_CHECKING:
    import pyvisa
    from pyvisa.resources import MessageBasedResource

__all__ = ["LineSettings", "VisaLink", "VisaPort", "check_visa_url", "open_visa_port", "parse_visa_url"]

_KEYS = ("backend", "sim")
_USAGE = ("write visa://RESOURCE[?backend=@py|@ivi][&sim=FILE.yaml], e.g. visa://GPIB0::12::INSTR, "
          "visa://TCPIP::192.168.1.5::5025::SOCKET or visa://ASRL1::INSTR?sim=simulators/visa/furnace.yaml")
_CHUNK = 4096  # bytes asked for when reading the rest of a message (a VISA read ends at END anyway)
# What a backend raises for a line setting the port refuses: termios.error on POSIX serial ports (not an
# OSError), OSError or ValueError elsewhere.
_REFUSED_SETTING: tuple[type[Exception], ...] = (OSError, ValueError)
if sys.platform != "win32":
    import termios

    _REFUSED_SETTING += (termios.error,)

_PROBE_MS = 20  # wait of one read() call: the transport's deadline loop calls again until its own timeout


class LineSettings(Protocol):
    """The fields of `drivers.transport.TransportSettings` a VISA port reads (named structurally, since
    the transport opens this module for visa:// links and must not be imported back)."""

    @property
    def baudrate(self) -> int: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def parity(self) -> str: ...
    @property
    def stopbits(self) -> float: ...
    @property
    def xonxoff(self) -> bool: ...
    @property
    def rtscts(self) -> bool: ...
    @property
    def encoding(self) -> str: ...
    @property
    def read_terminator(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def write_timeout(self) -> float: ...


@dataclass(frozen=True)
class VisaLink:
    """A parsed `visa://` URL: the VISA resource string and the pyvisa library spec to open it with."""

    resource: str
    backend: str = "@py"
    sim_file: Path | None = None

    @property
    def library(self) -> str:
        """What `pyvisa.ResourceManager` takes: `@py`, `@ivi`, a library path, or `FILE@sim`."""
        return f"{self.sim_file}@sim" if self.sim_file is not None else self.backend


def parse_visa_url(url: str) -> VisaLink:
    """The link `url` names; ValueError saying what to write. A relative `sim=` file is taken from the
    current directory and must exist."""
    rest = url.removeprefix("visa://")
    resource, _, query = rest.partition("?")
    if not resource.strip():
        raise ValueError(f"{url!r}: visa:// needs a VISA resource string; {_USAGE}")
    try:
        settings = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"{url!r}: cannot read the settings after '?'; {_USAGE}") from None
    unknown = sorted(set(settings) - set(_KEYS))
    if unknown:
        raise ValueError(f"{url!r}: unknown setting(s) {unknown}; visa:// takes {' and '.join(_KEYS)}")
    repeated = [key for key, values in settings.items() if len(values) > 1 or not values[0]]
    if repeated:
        raise ValueError(f"{url!r}: give {repeated[0]}= once, with a value; {_USAGE}")
    backend = settings.get("backend", ["@py"])[0]
    sim = settings.get("sim", [None])[0]
    if sim is None:
        return VisaLink(resource, backend)
    if "backend" in settings:
        raise ValueError(f"{url!r}: sim= picks the pyvisa-sim backend itself; remove backend=")
    path = Path(sim).expanduser()
    if not path.is_file():
        raise ValueError(f"{url!r}: the pyvisa-sim file {sim!r} does not exist (looked for {path.resolve()}); "
                         "give the path of a device YAML file, relative to the directory you run closedloop in")
    return VisaLink(resource, "@sim", path)


def check_visa_url(url: str) -> str:
    """`url` if it is a usable visa:// link (the resource string parses, the sim file exists); ValueError
    saying what to write. A system VISA (`backend=@ivi` or a library path) may also know aliases."""
    link = parse_visa_url(url)
    if link.backend in ("@py", "@sim"):
        from pyvisa import rname  # the resource grammar, only for visa:// links

        try:
            rname.parse_resource_name(link.resource)
        except rname.InvalidResourceName as e:
            raise ValueError(f"{url!r}: {link.resource!r} is not a VISA resource string ({e}); {_USAGE}") from None
    return url


def open_visa_port(url: str, settings: LineSettings) -> VisaPort:
    """The port for `visa://...`, not yet opened (what `open_port` returns for the visa scheme)."""
    return VisaPort(url, settings)


def _resource_manager(url: str, link: VisaLink) -> pyvisa.ResourceManager:
    try:
        import pyvisa
    except ImportError:
        raise ValueError(f"{url!r}: visa:// links need pyvisa; pip install pyvisa pyvisa-py") from None
    if link.sim_file is not None:
        try:
            manager = pyvisa.ResourceManager(link.library)
        except Exception as e:  # pyvisa-sim re-raises any parse error with its traceback as the message
            raise ValueError(f"{url!r}: pyvisa-sim cannot load {link.sim_file}: {_last_line(e)}; check the file "
                             "against pyvisa-sim's format (and pip install pyvisa-sim)") from None
        # pyvisa-sim "opens" a resource its file lacks without an error, so check here.
        known = manager.list_resources("?*")
        if str(pyvisa.rname.parse_resource_name(link.resource)) not in known:
            raise ValueError(f"{url!r}: the pyvisa-sim file {link.sim_file} has no resource {link.resource!r}; "
                             f"use one of {', '.join(known)}")
        return manager
    try:
        return pyvisa.ResourceManager(link.library)
    except (OSError, ValueError) as e:
        advice = ("pip install pyvisa-py" if link.backend == "@py"
                  else "install a system VISA (NI-VISA, Keysight IO Libraries) or use the default backend @py")
        raise ValueError(f"{url!r}: no VISA backend {link.backend!r} ({str(e).strip()}); {advice}") from None


def _last_line(error: Exception) -> str:
    """The last line of a message that embeds a traceback (`KeyError: 'nope'`), else the message."""
    lines = [line.strip(" '\"") for line in str(error).replace("\\n", "\n").splitlines()]
    return next((line for line in reversed(lines) if line), type(error).__name__)


class VisaPort:
    """A pyvisa message-based resource with the `Port` methods `SerialTransport` uses.

    `read` returns what arrives within a short wait and b"" when nothing does (never raises on a VISA
    timeout); bytes past `size` are kept for the next call. Errors other than timeouts become `OSError`,
    which the transport treats as a lost link (reconnect, or a fault when opening fails)."""

    def __init__(self, url: str, settings: LineSettings) -> None:
        self.url = url
        self.settings = settings
        self.link = parse_visa_url(url)
        self.timeout: float | None = _PROBE_MS / 1000
        self._manager = _resource_manager(url, self.link)
        self._resource: MessageBasedResource | None = None
        self.is_open = False
        self._pending = bytearray()
        self._counts_bytes = False  # a serial port says how many bytes have arrived (VI_ATTR_ASRL_AVAIL_NUM)
        self._timeout_ms: float | None = None

    def open(self) -> None:
        """Open the resource and set it up for raw reads; OSError says why it cannot be opened."""
        from pyvisa import constants, errors
        from pyvisa.resources import MessageBasedResource

        if self._resource is not None:
            return
        try:
            resource = self._manager.open_resource(self.link.resource, open_timeout=int(self.settings.timeout * 1000))
        except errors.VisaIOError as e:
            raise OSError(f"VISA cannot open {self.link.resource} through {self.link.library}: {e.description}") from e
        except (OSError, ValueError, NotImplementedError) as e:  # pyvisa-py: no such port; no driver for GPIB, USB
            raise OSError(f"VISA cannot open {self.link.resource}: {e}") from e
        if not isinstance(resource, MessageBasedResource):
            resource.close()
            raise OSError(f"{self.link.resource} is not a message-based VISA resource; use an INSTR or SOCKET resource")
        self._resource = resource
        self.is_open = True
        self._pending.clear()
        self._timeout_ms = None
        try:
            self._configure(resource, constants)
        except OSError:
            self._resource, self.is_open = None, False  # not left open at line settings it refused
            resource.close()
            raise

    def _configure(self, resource: MessageBasedResource, constants: Any) -> None:
        s, attr = self.settings, constants.ResourceAttribute
        self._set(attr.termchar, s.read_terminator.encode(s.encoding)[-1])
        self._set(attr.termchar_enabled, True)
        # A raw socket has no END: without this a read waits for its count or times out, dropping bytes.
        self._set(attr.suppress_end_enabled, False)
        if resource.interface_type == constants.InterfaceType.asrl:
            self._set(attr.asrl_end_in, constants.SerialTermination.termination_char)
            self._set(attr.asrl_end_out, constants.SerialTermination.none)  # the transport sends its terminator
            self._set(attr.asrl_baud_rate, s.baudrate)
            self._set(attr.asrl_data_bits, s.bytesize)
            self._set(attr.asrl_parity, "NOEMS".index(s.parity))  # VISA's order: none, odd, even, mark, space
            self._set(attr.asrl_stop_bits, {1: 10, 1.5: 15, 2: 20}[s.stopbits])
            flow = (constants.ControlFlow.xon_xoff if s.xonxoff else 0) | (constants.ControlFlow.rts_cts if s.rtscts else 0)
            self._set(attr.asrl_flow_control, int(flow))
            try:
                self._counts_bytes = self._available() >= 0
            except Exception:  # pyvisa-sim and some backends do not count; probing still loses nothing
                self._counts_bytes = False

    def _set(self, attribute: pyvisa.constants.ResourceAttribute, value: Any) -> None:
        """Set a VISA attribute. One the backend does not have (a raw socket's serial settings in some
        backends, a simulated session) is skipped; one it has and refuses (7 data bits on a port that
        cannot do them) is an OSError: a link left at other line settings would garble every reply."""
        from pyvisa import constants, errors

        assert self._resource is not None
        unsupported = (constants.StatusCode.error_nonsupported_attribute,
                       constants.StatusCode.error_nonsupported_attribute_state)
        try:
            self._resource.set_visa_attribute(attribute, value)
        except NotImplementedError:  # the backend has no such attribute at all (a simulated session)
            return
        except errors.VisaIOError as e:
            if e.error_code in unsupported:
                return
            raise OSError(f"{self.link.resource}: cannot set {attribute.name} to {value!r}: {e.description}") from e
        except _REFUSED_SETTING as e:  # pyvisa-py's serial session passes pyserial's termios errors through
            raise OSError(f"{self.link.resource}: cannot set {attribute.name} to {value!r}: {e}") from e

    def close(self) -> None:
        resource, self._resource = self._resource, None
        self.is_open = False
        self._pending.clear()
        if resource is not None:
            try:
                resource.close()
            except Exception as e:  # a vanished bus or socket may fail to close; it is closed either way
                raise OSError(f"closing {self.link.resource}: {e}") from e

    def write(self, data: bytes) -> int:
        from pyvisa import constants, errors

        resource = self._open_resource()
        self._use_timeout(self.settings.write_timeout * 1000)
        try:
            written = resource.write_raw(data)
        except errors.VisaIOError as e:
            if e.error_code == constants.StatusCode.error_timeout:
                raise serial.SerialTimeoutException(f"VISA write to {self.link.resource} timed out") from e
            raise OSError(f"VISA write to {self.link.resource}: {e.description}") from e
        return written

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes: buffered ones, else what arrives within a short wait (b"" if nothing)."""
        if not self._pending:
            self._receive(_PROBE_MS)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    @property
    def in_waiting(self) -> int:
        """Bytes that can be read now without waiting (polls the resource when none are buffered)."""
        if not self._pending:
            self._receive(0)
        return len(self._pending)

    def reset_input_buffer(self) -> None:
        """Discard buffered bytes and whatever the resource has ready."""
        self._pending.clear()
        for _ in range(64):  # bounded: an instrument that never stops talking cannot hold the caller here
            self._receive(0)
            if not self._pending:
                return
            self._pending.clear()

    # -- reading without losing bytes ------------------------------------------------------------

    def _open_resource(self) -> MessageBasedResource:
        if self._resource is None:
            raise OSError(f"{self.url} is not open")
        return self._resource

    def _use_timeout(self, milliseconds: float) -> None:
        if milliseconds != self._timeout_ms:
            self._open_resource().timeout = milliseconds  # 0 is VISA's immediate
            self._timeout_ms = milliseconds

    def _receive(self, wait_ms: float) -> None:
        """Append to the buffer what has arrived (waiting up to `wait_ms` for a first byte). Only a one-byte
        read may time out (it loses nothing); reads of bytes known to be there get the full timeout, since
        a read that times out part-way loses what it had (pyvisa-py stops an immediate read after one byte)."""
        rest_ms = max(self.settings.timeout * 1000, _PROBE_MS)
        if self._counts_bytes and (count := self._available()):
            self._pending += self._read_visa(count, rest_ms)
            return
        first = self._read_visa(1, wait_ms)
        if not first:
            return
        self._pending += first
        if self._counts_bytes:
            if count := self._available():
                self._pending += self._read_visa(count, rest_ms)
        else:
            # The rest of a message that has started: the read ends at END, the termination character or
            # (a raw socket) when the line goes quiet; the timeout only matters if the device stalls mid-message.
            self._pending += self._read_visa(_CHUNK, rest_ms)

    def _available(self) -> int:
        """Bytes a serial resource has received and not yet handed over (VI_ATTR_ASRL_AVAIL_NUM)."""
        from pyvisa import constants

        return int(self._open_resource().get_visa_attribute(constants.ResourceAttribute.asrl_avalaible_number))

    def _read_visa(self, count: int, wait_ms: float) -> bytes:
        from pyvisa import constants, errors

        resource = self._open_resource()
        self._use_timeout(wait_ms)
        try:
            with resource.ignore_warning(constants.StatusCode.success_max_count_read,
                                         constants.StatusCode.success_termination_character_read):
                data, _ = resource.visalib.read(resource.session, count)
        except errors.VisaIOError as e:
            if e.error_code == constants.StatusCode.error_timeout:
                return b""
            raise OSError(f"VISA read from {self.link.resource}: {e.description}") from e
        return bytes(data)
