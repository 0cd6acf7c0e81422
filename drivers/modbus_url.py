"""Where a Modbus controller is, as a protocol writes it: `modbus+tcp://HOST:PORT?unit=N` or
`modbus+rtu:///dev/ttyUSB0?unit=N&baudrate=9600`. Apart from the client (drivers/modbus_controller.py), so
that checking a protocol's options does not import pymodbus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

URL_HELP = ("write modbus+tcp://HOST:PORT?unit=N or modbus+rtu:///dev/ttyUSB0?unit=N&baudrate=9600"
            "[&parity=N|E|O&stopbits=1|2]")


@dataclass(frozen=True)
class ModbusLink:
    """Where a controller is: over TCP (`host`, `port`) or a serial line (`device`, line settings)."""

    transport: Literal["tcp", "rtu"]
    unit: int
    host: str = ""
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1


def parse_modbus_url(url: str) -> ModbusLink:
    """`modbus+tcp://HOST[:PORT]?unit=N` or `modbus+rtu:///dev/PATH?unit=N&baudrate=B&parity=P&stopbits=S`.
    ValueError says what is wrong and what to write instead."""
    parts = urlsplit(url)
    if parts.scheme not in ("modbus+tcp", "modbus+rtu"):
        raise ValueError(f"modbus connection {url!r}: unknown scheme {parts.scheme or '(none)'!r}; {URL_HELP}")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    allowed = {"unit"} if parts.scheme == "modbus+tcp" else {"unit", "baudrate", "parity", "stopbits"}
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"modbus connection {url!r}: unknown setting(s) {unknown}; {parts.scheme} takes "
                         f"{', '.join(sorted(allowed))}; {URL_HELP}")
    unit = _whole(url, "unit", query.get("unit"), 1, 247)
    if parts.scheme == "modbus+tcp":
        if not parts.hostname:
            raise ValueError(f"modbus connection {url!r}: no host; {URL_HELP}")
        try:
            port = parts.port or 502
        except ValueError:
            raise ValueError(f"modbus connection {url!r}: the port must be a number 0-65535; {URL_HELP}") from None
        return ModbusLink("tcp", unit, host=parts.hostname, port=port)
    if parts.netloc or not parts.path:
        raise ValueError(f"modbus connection {url!r}: give the serial device as a path after three slashes; {URL_HELP}")
    parity = query.get("parity", "N").upper()
    if parity not in ("N", "E", "O"):
        raise ValueError(f"modbus connection {url!r}: parity must be N, E or O, got {parity!r}")
    baudrate = _whole(url, "baudrate", query.get("baudrate"), 300, 921600, default=9600)
    stopbits = _whole(url, "stopbits", query.get("stopbits"), 1, 2, default=1)
    return ModbusLink("rtu", unit, device=parts.path, baudrate=baudrate, parity=parity, stopbits=stopbits)


def _whole(url: str, name: str, text: str | None, low: int, high: int, default: int | None = None) -> int:
    if text is None and default is not None:
        return default
    if text is None or not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"modbus connection {url!r}: {name} must be a whole number {low}-{high}"
                         f"{'' if text is None else f', got {text!r}'}; {URL_HELP}")
    return int(text)
