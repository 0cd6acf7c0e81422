"""SCPI reply parsing: numbers, lists, regex groups, IEEE-488.2 blocks and error-queue replies."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from closedloop.drivers.scpi import (
    ScpiParseError,
    block_extent,
    decode_block,
    encode_block,
    parse_block,
    parse_error_reply,
    parse_list,
    parse_number,
    parse_regex,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("+3.500000E+02", 350.0), (" 42 \r", 42.0), ("-1e-3", -0.001), ("0", 0.0)],
)
def test_numbers_in_scpi_notation(text: str, expected: float) -> None:
    assert parse_number(text) == pytest.approx(expected)


def test_scpi_nan_and_overload_codes_are_not_real_values() -> None:
    assert math.isnan(parse_number("9.91E+37"))
    assert parse_number("9.9E37") == math.inf
    assert parse_number("-9.9E37") == -math.inf


def test_a_non_number_is_refused_with_the_reply_quoted() -> None:
    with pytest.raises(ScpiParseError, match="'RUNNING'"):
        parse_number("RUNNING")


def test_comma_separated_list() -> None:
    assert parse_list("1.0,+2.5E0, -3") == [1.0, 2.5, -3.0]
    with pytest.raises(ScpiParseError, match="empty"):
        parse_list("  ")
    with pytest.raises(ScpiParseError, match="'1,x,3'"):
        parse_list("1,x,3")


def test_regex_group_one_is_the_number() -> None:
    assert parse_regex("RS=4.2E+01;T=350.0", r"RS=([-+.0-9eE]+)") == pytest.approx(42.0)
    with pytest.raises(ScpiParseError, match="does not match"):
        parse_regex("T=350.0", r"RS=([-+.0-9eE]+)")
    with pytest.raises(ScpiParseError, match="no group"):
        parse_regex("RS=1", r"RS=\d")


@given(st.binary(max_size=3000))
def test_block_round_trip(payload: bytes) -> None:
    block = encode_block(payload)
    header, length = block_extent(block)
    assert length == len(payload)
    assert block[header:] == payload
    assert parse_block(block + b"\n") == payload


def test_block_header_incomplete_until_the_length_digits_arrive() -> None:
    assert block_extent(b"") is None
    assert block_extent(b"#") is None
    assert block_extent(b"#3") is None
    assert block_extent(b"#31") is None
    assert block_extent(b"#3120") == (5, 120)


@pytest.mark.parametrize(("data", "message"), [(b"1.0,2.0", "starting with '#'"), (b"#0abc", "indefinite"),
                                               (b"#x12", "digit 1-9"), (b"#2a1", "not digits")])
def test_malformed_block_headers_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ScpiParseError, match=message):
        block_extent(data)


def test_truncated_block_is_refused() -> None:
    with pytest.raises(ScpiParseError, match="announces 8 bytes but only 3"):
        parse_block(b"#18abc")


def test_block_of_float32_values() -> None:
    values = [1.5, -2.25, 40.0]
    payload = parse_block(encode_block(struct.pack("<3f", *values)))
    np.testing.assert_allclose(decode_block(payload, "<f4"), values)
    with pytest.raises(ScpiParseError, match="whole number"):
        decode_block(payload[:-1], "<f4")


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [('0,"No error"', 0, "No error"), ('-222,"Data out of range"', -222, "Data out of range"), ("+0", 0, "")],
)
def test_error_queue_replies(text: str, code: int, message: str) -> None:
    assert parse_error_reply(text) == (code, message)


def test_an_error_reply_without_a_code_is_refused() -> None:
    with pytest.raises(ScpiParseError, match="No error"):
        parse_error_reply("No error")
