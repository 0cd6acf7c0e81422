"""The restricted constraint language: linear expressions only, and never code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closedloop.controller.protocol.expressions import (
    ExpressionError,
    parse_linear_constraint,
    parse_outcome_constraint,
)

NUMERIC = ["anneal_temp", "anneal_time", "spin_speed", "x", "y", "z"]


def parse(text: str, **kwargs: object):
    return parse_linear_constraint(text, NUMERIC, **kwargs)  # type: ignore[arg-type]


def test_inequality_is_normalized_to_less_or_equal() -> None:
    c = parse("anneal_temp + 2 * anneal_time <= 220")
    assert c.coefficients == {"anneal_temp": 1.0, "anneal_time": 2.0}
    assert (c.rhs, c.kind, c.text) == (220.0, "<=", "anneal_temp + 2 * anneal_time <= 220")


def test_greater_or_equal_is_negated() -> None:
    c = parse("x - y >= 1")
    assert c.coefficients == {"x": -1.0, "y": 1.0}
    assert c.rhs == -1.0 and c.kind == "<="


def test_strict_comparisons_mean_non_strict_over_continuous_parameters() -> None:
    assert parse("x < 3") == parse("x <= 3").__class__({"x": 1.0}, 3.0, "<=", "x < 3")
    assert parse("x > 3").coefficients == {"x": -1.0}


def test_equality_for_a_composition_that_sums_to_one() -> None:
    c = parse("x + y + z == 1")
    assert c.kind == "==" and c.rhs == 1.0
    assert c.holds({"x": 0.2, "y": 0.3, "z": 0.5})
    assert not c.holds({"x": 0.2, "y": 0.3, "z": 0.6})


def test_terms_on_both_sides_parentheses_unary_minus_and_division_by_constants() -> None:
    c = parse("-(x - 2 * y) / 4 + 3 <= y * 0.5 - z")
    # -(x - 2y)/4 + 3 - 0.5y + z <= 0  ->  -0.25x + 0.5y - 0.5y + z <= -3
    assert c.coefficients == {"x": -0.25, "z": 1.0}
    assert c.rhs == -3.0


def test_fixed_parameters_are_substituted_and_labels_refused() -> None:
    c = parse_linear_constraint("x + sr <= 500", ["x"], {"sr": 450.0}, ["solvent"])
    assert c.coefficients == {"x": 1.0} and c.rhs == 50.0
    with pytest.raises(ExpressionError, match="'solvent' is not numeric"):
        parse_linear_constraint("x + solvent <= 1", ["x"], {}, ["solvent"])


def test_unknown_parameter_suggests_the_closest_name() -> None:
    with pytest.raises(ExpressionError, match=r"unknown parameter 'anneal_tmp'; did you mean 'anneal_temp'\?"):
        parse("anneal_tmp <= 3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x * y <= 1", "not linear: product of 'x' and 'y'"),
        ("(x + 1) * (y - 2) <= 1", "not linear: product"),
        ("x ** 2 <= 4", "not linear: powers"),
        ("1 / x <= 4", "not linear: division by 'x'"),
        ("x % 2 <= 1", "operator '%' is not allowed"),
        ("~x <= 1", "only unary minus and plus"),
        ("x / 0 <= 1", "division by zero"),
    ],
)
def test_non_linear_expressions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("__import__('os').system('x') <= 1", "a function call"),
        ("x.real <= 1", "an attribute access"),
        ("x[0] <= 1", "a subscript"),
        ("(lambda: 1)() <= x", "a function call"),
        ("(lambda q: q) <= x", "a lambda"),
        ("[i for i in x] <= 1", "a comprehension"),
        ("x if y else z <= 1", "a conditional expression"),
        ("(x := 3) <= 1", "an assignment expression"),
        ("x and y <= 1", "a boolean operator"),
    ],
)
def test_code_is_refused_without_being_run(text: str, found: str) -> None:
    with pytest.raises(ExpressionError, match=f"code is not allowed in a constraint \\(found {found}\\)"):
        parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import os", "not a valid expression"),
        ("x + y", "needs a comparison"),
        ("0 <= x <= 1", "one comparison per constraint"),
        ("x != 1", "only <=, >=, <, > and =="),
        ("x = 1", "use == for an equality"),
        ("x + 'a' <= 1", "only numbers and parameter names"),
        ("x + True <= 1", "only numbers and parameter names"),
        ("x - x <= 1", "involves no searched parameter and is always true"),
        ("3 <= 1", "always false"),
        ("x + " * 400 + "x <= 1", "longer than 1000 characters"),
    ],
)
def test_malformed_constraints_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse(text)


def test_refused_code_never_executes(tmp_path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ExpressionError):
        parse(f"open({str(marker)!r}, 'w').write('x') <= 1")
    assert not marker.exists()


@given(
    coefficients=st.dictionaries(st.sampled_from(NUMERIC), st.integers(-50, 50).filter(bool), min_size=1),
    rhs=st.integers(-1000, 1000),
    op=st.sampled_from(["<=", ">=", "=="]),
)
def test_written_linear_forms_parse_back_to_their_coefficients(coefficients: dict[str, int], rhs: int, op: str) -> None:
    text = " + ".join(f"{c} * {name}" for name, c in coefficients.items()) + f" {op} {rhs}"
    parsed = parse(text)
    sign = -1.0 if op == ">=" else 1.0
    assert parsed.coefficients == {n: sign * c for n, c in coefficients.items()}
    assert parsed.rhs == sign * rhs
    assert parsed.kind == ("==" if op == "==" else "<=")


def test_outcome_constraint_converts_the_bound_to_the_objective_unit() -> None:
    c = parse_outcome_constraint("tau_half >= 0.1 us", {"tau_half": "ns"})
    assert (c.name, c.op, c.bound) == ("tau_half", ">=", pytest.approx(100.0))
    assert parse_outcome_constraint("rrr <= 5", {"rrr": ""}).bound == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tau_hlf >= 100 ns", r"unknown quantity 'tau_hlf'.*; did you mean 'tau_half'\?"),
        ("tau_half >= 100 K", "cannot convert 'K' to 'ns'"),
        ("tau_half >= 100 blips", "unknown unit 'blips'"),
        ("tau_half == 100 ns", "uses <= or >=, not '=='"),
        ("__import__('os') >= 1", "write an outcome constraint as 'NAME >= VALUE"),
    ],
)
def test_bad_outcome_constraints(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_outcome_constraint(text, {"tau_half": "ns"})
