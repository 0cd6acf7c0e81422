"""Units: real conversions through pint, lab units added, incompatible or unknown units refused."""

from __future__ import annotations

import math

import pytest

from closedloop.units import (
    UnitError,
    compatible,
    convert,
    parse_duration_s,
    parse_quantity_to,
    parse_unit,
)


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (300.0, "K", "degC", 26.85),  # offset units: not a multiplication
        (25.0, "degC", "K", 298.15),
        (212.0, "degF", "degC", 100.0),
        (500.0, "nm", "um", 0.5),
        (2.0, "h", "min", 120.0),
        (1000.0, "sccm", "slm", 1.0),
        (760.0, "Torr", "mbar", 1013.25),
        (1.0, "torr", "Pa", 133.322),
        (60.0, "rpm", "1/s", 2 * math.pi),  # pint counts a revolution as 2*pi radians
        (1e15, "photons/cm^2", "1/cm^2", 1e15),
        (1.0, "cm^2/(V*s)", "m^2/(V*s)", 1e-4),
    ],
)
def test_convert_between_compatible_units(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-4)


def test_same_unit_returns_the_value_unchanged() -> None:
    assert convert(7, "rpm", "rpm") == 7.0
    assert convert(0.25, "", "") == 0.25


@pytest.mark.parametrize(("a", "b"), [("degC", "ns"), ("nm", "K"), ("sccm", "min"), ("", "degC")])
def test_incompatible_units_are_refused_with_both_names(a: str, b: str) -> None:
    assert not compatible(a, b)
    with pytest.raises(UnitError, match="cannot convert") as err:
        convert(1.0, a, b)
    assert (a or "a plain number") in str(err.value)


def test_compatible_reports_same_dimension() -> None:
    assert compatible("degC", "K")
    assert compatible("um", "angstrom")
    assert compatible("", "percent")


def test_unknown_unit_named_with_a_suggestion() -> None:
    with pytest.raises(UnitError, match=r"unknown unit 'degc'; did you mean 'degC'\?"):
        parse_unit("degc")
    with pytest.raises(UnitError, match="unknown unit 'flurbs'"):
        parse_unit("flurbs")


def test_unit_text_is_parsed_not_evaluated() -> None:
    # pint parses unit expressions itself; Python names and calls are just unknown units.
    with pytest.raises(UnitError, match="unknown unit"):
        parse_unit("__import__('os')")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (3, "K", 3.0),
        ("3", "K", 3.0),
        ("500 nm", "um", 0.5),
        ("500nm", "nm", 500.0),
        ("25 degC", "K", 298.15),
        ("-5 degC", "degC", -5.0),
        ("1e15 photons/cm^2", "1/cm^2", 1e15),
        (".5 h", "min", 30.0),
    ],
)
def test_parse_quantity_from_numbers_and_strings(value: float | str, unit: str, expected: float) -> None:
    assert parse_quantity_to(value, unit) == pytest.approx(expected)


def test_parse_quantity_passes_not_a_number_through_for_failed_readings() -> None:
    assert math.isnan(parse_quantity_to("nan", "ns"))
    assert parse_quantity_to("inf ns", "s") == math.inf


@pytest.mark.parametrize("bad", ["fast", "ten K", True, "1 2 3 K"])
def test_parse_quantity_refuses_what_is_not_a_quantity(bad: object) -> None:
    with pytest.raises(UnitError):
        parse_quantity_to(bad, "K")  # type: ignore[arg-type]


def test_durations_need_a_time_unit() -> None:
    assert parse_duration_s("12 h") == 43200.0
    assert parse_duration_s("1.5 min") == 90.0
    assert parse_duration_s("2 day") == 172800.0
    with pytest.raises(UnitError, match="with a unit"):
        parse_duration_s(12)
    with pytest.raises(UnitError, match="cannot convert 'K'"):
        parse_duration_s("5 K")
    with pytest.raises(UnitError, match="non-negative"):
        parse_duration_s("-1 s")


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    (120.0, "ohm/sq", "ohm", 120.0),  # a square is a pure number
    (2.5, "kohm/sq", "ohm/sq", 2500.0),
    (5.0, "at%", "atomic_fraction", 0.05),
    (40.0, "wt %", "wt%", 40.0),
    (1.0, "mbar", "Torr", 0.750062),
    (10.0, "sccm", "slm", 0.01),
])
def test_the_lab_units_of_the_definitions_file(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-5)


def test_atomic_and_weight_percent_are_not_interchangeable() -> None:
    # Converting at% to wt% needs the elements' masses: pint must refuse it rather than pass it through.
    assert not compatible("at%", "wt%")
    assert not compatible("wt%", "percent")
    with pytest.raises(UnitError, match="different dimensions"):
        convert(5.0, "at%", "wt%")
