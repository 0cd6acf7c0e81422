"""Parsing SCPI replies: numbers, comma-separated lists, a regex group, IEEE-488.2 binary blocks, and
`SYST:ERR?` answers. Pure functions on text/bytes; every failure is a `ScpiParseError` quoting the reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from closedloop.drivers.base import InstrumentFault

# SCPI-99 7.2.1: 9.91E37 is "not a number", +/-9.9E37 are +/- infinity (overload).
_SCPI_NAN = 9.91e37
_SCPI_INF = 9.9e37
_QUOTED_CHARS = 120  # of a list reply in an error message
_ERROR_REPLY = re.compile(r'^\s*([+-]?\d+)\s*(?:,\s*"?(.*?)"?\s*)?$', re.DOTALL)


class ScpiParseError(ValueError):
    """A reply that does not have the shape the protocol file said it would."""


def parse_number(text: str) -> float:
    """A float from an SCPI numeric reply ("+3.5E+02", "42", " 1.0 "); SCPI's NaN/overload codes map
    to nan/inf so an overloaded reading is never mistaken for a huge real value."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        raise ScpiParseError(f"expected a number, got {text!r}") from None
    if math.isclose(value, _SCPI_NAN, rel_tol=1e-4):
        return math.nan
    if math.isclose(abs(value), _SCPI_INF, rel_tol=1e-4):
        return math.copysign(math.inf, value)
    return value


def parse_list(text: str) -> list[float]:
    """Numbers from a comma-separated reply ("1.0,2.5,+3E0"); an empty reply is an error. A long reply
    (a waveform) is quoted only in part, with the position of the item that is not a number."""
    if not text.strip():
        raise ScpiParseError("expected a comma-separated list of numbers, got an empty reply")
    items = text.split(",")
    numbers: list[float] = []
    for item in items:
        try:
            numbers.append(parse_number(item))
        except ScpiParseError as e:
            shown = repr(text) if len(text) <= _QUOTED_CHARS else f"{text[:_QUOTED_CHARS]!r}... ({len(text)} chars)"
            raise ScpiParseError(f"expected a comma-separated list of numbers, got {shown} "
                                 f"(item {len(numbers) + 1} of {len(items)}: {e})") from None
    return numbers


def parse_regex(text: str, pattern: str | re.Pattern[str]) -> float:
    """The number captured by group 1 of `pattern` (searched anywhere in the reply)."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    match = compiled.search(text)
    if match is None:
        raise ScpiParseError(f"reply {text!r} does not match the pattern {compiled.pattern!r}")
    if match.lastindex is None:
        raise ScpiParseError(f"the pattern {compiled.pattern!r} has no group ( ) capturing the number")
    return parse_number(match.group(1))


def block_extent(data: bytes | bytearray) -> tuple[int, int] | None:
    """(header length, payload length) of the definite-length block `#<n><len><payload>` at the start of
    `data`, or None while the header is still incomplete. `#0` (indefinite length) is not supported: it
    has no length to read up to."""
    if not data:
        return None
    if data[:1] != b"#":
        raise ScpiParseError(f"expected a binary block starting with '#', got {bytes(data[:16])!r}")
    if len(data) < 2:
        return None
    digit = chr(data[1])
    if not digit.isdigit() or digit == "0":
        raise ScpiParseError(
            f"binary block header {bytes(data[:2])!r}: expected '#' and a digit 1-9 giving how many length "
            "digits follow (indefinite-length '#0' blocks are not supported)"
        )
    n = int(digit)
    if len(data) < 2 + n:
        return None
    length_text = bytes(data[2 : 2 + n])
    if not length_text.isdigit():
        raise ScpiParseError(f"binary block header {bytes(data[: 2 + n])!r}: the length {length_text!r} is not digits")
    return 2 + n, int(length_text)


def parse_block(data: bytes) -> bytes:
    """The payload of a complete definite-length block; trailing terminator bytes are ignored."""
    extent = block_extent(data)
    if extent is None:
        raise ScpiParseError(f"incomplete binary block header {data[:12]!r}")
    header, length = extent
    if len(data) < header + length:
        raise ScpiParseError(f"binary block announces {length} bytes but only {len(data) - header} arrived")
    return bytes(data[header : header + length])


def encode_block(payload: bytes) -> bytes:
    """`#<n><len><payload>`: what an instrument sends (used by emulators and tests)."""
    length = str(len(payload))
    if len(length) > 9:
        raise ValueError("a definite-length block holds at most 999,999,999 bytes")
    return f"#{len(length)}{length}".encode("ascii") + payload


def decode_block(payload: bytes, dtype: str) -> np.ndarray:
    """A numeric array from a block payload, e.g. dtype "<f4" (little-endian float32)."""
    kind = np.dtype(dtype)
    if len(payload) % kind.itemsize:
        raise ScpiParseError(f"binary block of {len(payload)} bytes is not a whole number of {dtype} values")
    return np.frombuffer(payload, dtype=kind).astype(np.float64)


def parse_error_reply(text: str) -> tuple[int, str]:
    """(code, message) from an error-queue reply such as `0,"No error"` or `-222,"Data out of range"`."""
    match = _ERROR_REPLY.match(text)
    if match is None:
        raise ScpiParseError(f'expected an error-queue reply such as 0,"No error", got {text!r}')
    return int(match.group(1)), (match.group(2) or "").strip()


MAX_QUEUED_ERRORS = 16  # an error queue that never empties is itself a fault


def drain_error_queue(query: Callable[[str], str], error_query: str, after: str) -> list[str]:
    """Empty an SCPI error queue (`SYST:ERR?` until `0,...`) and return the queued errors, oldest first.
    `InstrumentFault` when a reply is not an error-queue reply or the queue does not empty."""
    errors: list[str] = []
    for _ in range(MAX_QUEUED_ERRORS):
        reply = query(error_query)
        try:
            code, _message = parse_error_reply(reply)
        except ScpiParseError as e:
            raise InstrumentFault(f"after {after!r}: {error_query} gave {e}") from None
        if code == 0:
            return errors
        errors.append(reply)
    raise InstrumentFault(f"after {after!r}: {error_query} still reports errors after {MAX_QUEUED_ERRORS} reads: "
                          f"{'; '.join(errors[-3:])}")


def check_error_queue(query: Callable[[str], str], error_query: str, after: str, instrument: str) -> None:
    """Drain an SCPI error queue and raise `InstrumentFault` naming every queued error and the command
    `after` which they were found. `query` sends one query, returns its reply."""
    errors = drain_error_queue(query, error_query, after)
    if errors:
        raise InstrumentFault(f"{instrument} reported an error after {after!r}: {'; '.join(errors)}")
