"""Arithmetic formulas a protocol may write, e.g. a simulated instrument's reading as a function of its
setpoints: `"120 * exp(-((plate_temp - 140) / 40)**2) + 0.05 * stir_speed"`.

Protocol files never execute code. The text is read with `ast.parse` (which only builds a tree) and every
node is checked against a whitelist before anything is evaluated: numbers, names of the given variables
(and `pi`, `e`), `+ - * / **`, unary minus, parentheses, and calls of the functions in `FUNCTIONS` by
name. Attributes, subscripts, strings, lambdas, comprehensions and every other node are refused as code.
This is the constraint language of `controller.protocol.expressions` widened to non-linear arithmetic; it
lives at the root because the drivers' protocol sections check formulas and the simulators evaluate them.

Evaluation never raises for a value: an overflow, a log of a negative number or a division by zero gives
NaN, which a simulated instrument reports the way a real one reports an overload.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from difflib import get_close_matches

MAX_LENGTH = 1000  # deeply nested input can exhaust the parser's recursion; formulas are short

FUNCTIONS: dict[str, Callable[..., float]] = {
    "exp": math.exp, "log": math.log, "log10": math.log10, "sqrt": math.sqrt, "abs": abs,
    "min": min, "max": max, "sin": math.sin, "cos": math.cos, "tanh": math.tanh,
}
CONSTANTS = {"pi": math.pi, "e": math.e}

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    # Operands are floats (never Python ints), so 10 ** 10 ** 10 overflows at once instead of running for ever.
    ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b,
}
_ALLOWED = (ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call, ast.USub, ast.UAdd,
            *_BINARY)


class FormulaError(ValueError):
    """A formula that is not valid restricted arithmetic; the message says what to write instead."""


@dataclass(frozen=True)
class Formula:
    """A checked formula over `variables`; `evaluate(values)` gives its value (NaN where undefined)."""

    text: str
    tree: ast.expr
    variables: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        try:
            result = float(_evaluate(self.tree, values))
        except (ArithmeticError, ValueError, TypeError, KeyError):  # 1/0, log(-1), overflow, an unset name: undefined
            return math.nan
        return result if math.isfinite(result) else math.nan


def parse_formula(text: str, variables: Collection[str] | None) -> Formula:
    """`text` checked as a formula over `variables` (None: any name, checked later by the caller);
    `FormulaError` says what is wrong and what to write."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("a formula cannot be empty; write e.g. '2 * plate_temp + 5'")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise FormulaError(f"{text!r} is not a valid formula: {e.msg} at column {e.offset or 0}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FormulaError("the formula is nested too deeply or contains invalid characters") from None
    known = set(variables or ()) | set(CONSTANTS)
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise FormulaError(f"{text!r}: {type(node).__name__} is not allowed in a formula; use numbers, "
                               f"names, + - * / ** ( ) and the functions {', '.join(FUNCTIONS)}")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, int | float)):
            raise FormulaError(f"{text!r}: {node.value!r} is not a number")
        if isinstance(node, ast.Call):
            _check_call(text, node)
        elif isinstance(node, ast.Name) and variables is not None and node.id not in known and not _is_called(tree, node):
            close = get_close_matches(node.id, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(variables or ())) or 'none'}"
            raise FormulaError(f"{text!r}: unknown name {node.id!r}; {hint}")
    used = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in CONSTANTS
                     and not _is_called(tree, n))
    return Formula(text, tree, used)


def _check_call(text: str, node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else "that"
        raise FormulaError(f"{text!r}: {name} is not a function a formula may call; use {', '.join(FUNCTIONS)}")
    if node.keywords or not node.args:
        raise FormulaError(f"{text!r}: {node.func.id}() takes plain arguments, e.g. {node.func.id}(x)")


def _is_called(tree: ast.expr, name: ast.Name) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _evaluate(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # parse_formula refused every other constant
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id]) if node.id in values else CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # parse_formula allows nothing else
    return float(FUNCTIONS[node.func.id](*(_evaluate(arg, values) for arg in node.args)))
