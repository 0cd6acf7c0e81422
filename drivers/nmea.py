"""Checksummed sentences, NMEA-style, as sample robots and other line-protocol instruments speak them.

A sentence is `$FIELD,FIELD,...*HH`: the fields joined by commas between `$` and `*`, then HH, the XOR of
those bytes as two upper-case hex digits. The line terminator (CR LF) belongs to the transport. Fields
may not contain `$`, `*`, `,` or line breaks: there is no escaping.
"""

from __future__ import annotations

from functools import reduce

_RESERVED = set("$*,\r\n")


class SentenceError(ValueError):
    """A line that is not a well-formed sentence, or whose checksum does not match."""


def checksum(body: str) -> str:
    """The two hex digits for `body` (the text between `$` and `*`)."""
    return f"{reduce(lambda acc, byte: acc ^ byte, body.encode('ascii'), 0):02X}"


def frame(*fields: str) -> str:
    """`$F1,F2,...*HH` for the fields. ValueError for a field the sentence cannot carry."""
    for field in fields:
        if _RESERVED & set(field) or not field.isascii():
            raise ValueError(f"{field!r} cannot be a sentence field (no $ * , line breaks or non-ASCII)")
    body = ",".join(fields)
    return f"${body}*{checksum(body)}"


def unframe(line: str) -> list[str]:
    """The fields of one sentence (terminator stripped); `SentenceError` saying what is wrong otherwise."""
    text = line.strip()
    if not text.startswith("$"):
        raise SentenceError(f"{line!r} does not start with '$'")
    body, star, digits = text[1:].rpartition("*")
    if not star:
        raise SentenceError(f"{line!r} has no '*HH' checksum")
    if not body.isascii() or "$" in body:
        raise SentenceError(f"{line!r} is garbled")
    if digits.upper() != checksum(body):
        raise SentenceError(f"{line!r}: checksum {digits!r}, expected {checksum(body)}")
    return body.split(",")
