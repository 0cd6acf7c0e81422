"""The restricted expression language of protocol constraints. Protocol files never execute code.

A linear constraint is one comparison between linear expressions over numeric parameters:
numbers, parameter names, `+`, `-`, unary minus, parentheses, multiplication by a constant and
division by a constant. The text is read with `ast.parse` (which only builds a tree, it runs nothing)
and every node is checked against that whitelist; anything else (calls, attributes, subscripts,
lambdas, strings...) is refused as code. A product of two parameters is refused as not linear.

An outcome constraint is `OBJECTIVE >= VALUE [UNIT]` (or `<=`), e.g. "tau_half >= 100 ns".
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Collection, Mapping
from difflib import get_close_matches

from closedloop.planners.space import LinearConstraint, OutcomeConstraint
from closedloop.units import UnitError, parse_quantity_to

MAX_LENGTH = 1000  # deeply nested input can exhaust the parser's recursion; constraints are short

_COMPARISONS: dict[type[ast.cmpop], str] = {ast.LtE: "<=", ast.Lt: "<=", ast.GtE: ">=", ast.Gt: ">=", ast.Eq: "=="}
_OPERATOR_NAMES: dict[type[ast.AST], str] = {
    ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
    ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
}
_CODE_NAMES: dict[type[ast.AST], str] = {
    ast.Call: "a function call", ast.Attribute: "an attribute access", ast.Subscript: "a subscript",
    ast.Lambda: "a lambda", ast.Starred: "a starred expression", ast.NamedExpr: "an assignment expression",
    ast.IfExp: "a conditional expression", ast.BoolOp: "a boolean operator", ast.JoinedStr: "an f-string",
    ast.ListComp: "a comprehension", ast.GeneratorExp: "a comprehension", ast.Await: "await",
}
_OUTCOME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|=|<|>)\s*(\S.*?)\s*$")

# A linear form: coefficient per parameter name, plus a constant term.
LinearForm = tuple[dict[str, float], float]


class ExpressionError(ValueError):
    """A constraint that is not a valid restricted expression; the message says what to write instead."""


def parse_linear_constraint(
    text: str,
    variables: Collection[str],
    constants: Mapping[str, float] | None = None,
    non_numeric: Collection[str] = (),
) -> LinearConstraint:
    """Parse "anneal_temp + 2 * anneal_time <= 220" into `sum(c_i x_i) <= rhs` (or `== rhs`).

    `variables` are the searched numeric parameters; `constants` are fixed parameters, whose values are
    substituted; `non_numeric` names parameters that exist but cannot appear (categorical ones).
    Strict `<`/`>` mean `<=`/`>=` over continuous parameters; `>=` is normalized to `<=` by negation.
    """
    tree = _parse(text)
    _refuse_code(tree)
    if not isinstance(tree, ast.Compare):
        raise ExpressionError(f"a constraint needs a comparison (<=, >= or ==), e.g. 'a + 2 * b <= 10'; got {text!r}")
    if len(tree.ops) != 1:
        raise ExpressionError("write one comparison per constraint (split 'a <= b <= c' into two constraints)")
    op = _COMPARISONS.get(type(tree.ops[0]))
    if op is None:
        raise ExpressionError("only <=, >=, <, > and == are allowed as comparisons")
    reader = _LinearReader(variables, constants or {}, non_numeric)
    left, left_const = reader.read(tree.left)
    right, right_const = reader.read(tree.comparators[0])
    sign = -1.0 if op == ">=" else 1.0
    coefficients: dict[str, float] = {}
    for name in dict.fromkeys([*left, *right]):
        c = sign * (left.get(name, 0.0) - right.get(name, 0.0))
        if c != 0.0:
            coefficients[name] = c
    rhs = sign * (right_const - left_const)
    # Each number is finite, but products and sums of them may not be (1e200 * 1e200): such a constraint
    # compares nothing, and the planner's linear algebra would fail on it.
    overflowing = [name for name, c in coefficients.items() if not math.isfinite(c)] + ([] if math.isfinite(rhs) else ["the constant"])
    if overflowing:
        raise ExpressionError(f"the numbers overflow to infinity (in the term of {overflowing[0]}); "
                              "scale the constraint down, e.g. divide both sides by the same power of ten")
    if not coefficients:
        holds = rhs >= 0.0 if op != "==" else rhs == 0.0
        verdict = "always true" if holds else "always false, so no point can satisfy it"
        raise ExpressionError(f"the constraint involves no searched parameter and is {verdict}")
    return LinearConstraint(coefficients, rhs, "==" if op == "==" else "<=", text.strip())


def parse_outcome_constraint(text: str, units: Mapping[str, str]) -> OutcomeConstraint:
    """Parse "tau_half >= 100 ns" into an OutcomeConstraint with the bound in the quantity's unit.

    `units`: every quantity a constraint may name (the objectives, and what the instrument measures)
    -> the unit its values are compared in."""
    match = _OUTCOME.match(text)
    if match is None:
        raise ExpressionError(f"write an outcome constraint as 'NAME >= VALUE [UNIT]', e.g. 'tau_half >= 100 ns'; got {text!r}")
    name, op, value = match.groups()
    if op not in ("<=", ">="):
        raise ExpressionError(f"an outcome constraint uses <= or >=, not {op!r}")
    if name not in units:
        raise ExpressionError(f"unknown quantity {name!r}: an outcome constraint names an objective or a value the "
                              f"instrument measures{_did_you_mean(name, units)}")
    try:
        bound = parse_quantity_to(value, units[name])
    except UnitError as e:
        raise ExpressionError(f"bound of {name}: {e}") from None
    if not math.isfinite(bound):
        raise ExpressionError(f"the bound of {name} must be a finite number, got {value!r}")
    return OutcomeConstraint(name, op, bound)  # type: ignore[arg-type]


def _parse(text: str) -> ast.expr:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        if re.search(r"(?<![<>=!])=(?!=)", text):
            raise ExpressionError("use == for an equality constraint (a single = is not a comparison)") from None
        raise ExpressionError(f"not a valid expression: {e.msg} at column {e.offset or 0}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("the expression is nested too deeply or contains invalid characters") from None


_ALLOWED_NODES = (ast.Compare, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.operator, ast.unaryop, ast.cmpop)


def _refuse_code(tree: ast.expr) -> None:
    """Refuse any node outside the whitelist, wherever it sits, before anything else is looked at."""
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            kind = _CODE_NAMES.get(type(node), f"a {type(node).__name__} node")
            raise ExpressionError(f"code is not allowed in a constraint (found {kind}); use numbers, parameter names, + - * / and ( )")


class _LinearReader:
    """Walks an expression tree into a linear form, refusing every node outside the whitelist."""

    def __init__(self, variables: Collection[str], constants: Mapping[str, float], non_numeric: Collection[str]):
        self.variables = set(variables)
        self.constants = constants
        self.non_numeric = set(non_numeric)

    def read(self, node: ast.expr) -> LinearForm:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            coefficients, const = self.read(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return {n: sign * c for n, c in coefficients.items()}, sign * const
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Compare):
            raise ExpressionError("write one comparison per constraint")
        if isinstance(node, ast.UnaryOp):
            raise ExpressionError("only unary minus and plus are allowed (not 'not' or '~')")
        raise ExpressionError(f"unsupported expression {ast.unparse(node)!r}")

    def _constant(self, node: ast.Constant) -> LinearForm:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers and parameter names are allowed, not {node.value!r}")
        try:
            value = float(node.value)
        except OverflowError:  # an integer literal beyond any float
            value = math.inf
        if not math.isfinite(value):
            raise ExpressionError("a number in the constraint is too large for a float (it overflows to infinity); "
                                  "scale the constraint down")
        return {}, value

    def _name(self, name: str) -> LinearForm:
        if name in self.variables:
            return {name: 1.0}, 0.0
        if name in self.constants:
            return {}, float(self.constants[name])
        if name in self.non_numeric:
            raise ExpressionError(f"{name!r} is not numeric; constraints apply to float and int parameters")
        known = [*self.variables, *self.constants, *self.non_numeric]
        raise ExpressionError(f"unknown parameter {name!r}{_did_you_mean(name, known)}")

    def _binary(self, node: ast.BinOp) -> LinearForm:
        op = type(node.op)
        if op in _OPERATOR_NAMES:
            symbol = _OPERATOR_NAMES[op]
            detail = "powers are not linear" if op is ast.Pow else f"operator {symbol!r} is not allowed"
            raise ExpressionError(f"not linear: {detail}; use + - * / with constants")
        left, left_const = self.read(node.left)
        right, right_const = self.read(node.right)
        if op in (ast.Add, ast.Sub):
            sign = 1.0 if op is ast.Add else -1.0
            merged = dict(left)
            for name, c in right.items():
                merged[name] = merged.get(name, 0.0) + sign * c
            return merged, left_const + sign * right_const
        if op is ast.Mult:
            if left and right:
                raise ExpressionError(f"not linear: product of {_names(left)} and {_names(right)}")
            factor, (coefficients, const) = (left_const, (right, right_const)) if not left else (right_const, (left, left_const))
            return {n: factor * c for n, c in coefficients.items()}, factor * const
        # Division: only by a constant, which keeps the expression linear.
        if right:
            raise ExpressionError(f"not linear: division by {_names(right)}")
        if right_const == 0.0:
            raise ExpressionError("division by zero")
        return {n: c / right_const for n, c in left.items()}, left_const / right_const


def _names(coefficients: Mapping[str, float]) -> str:
    return " + ".join(repr(n) for n in coefficients)


def _did_you_mean(name: str, known: Collection[str]) -> str:
    close = get_close_matches(name, list(known), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known: {', '.join(sorted(known))}" if known else ""
