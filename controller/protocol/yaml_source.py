"""YAML protocol text -> plain data, plus a map from field paths back to FILE:LINE:COL.

Every problem with a protocol is reported as `FILE:LINE:COL: field.path: message`, pointing at the
most specific key or value that exists in the file. Duplicate keys are refused (ruamel's default) and
all of them are reported, not just the first. Pydantic's validation errors are translated here too:
their `loc` tuples are mapped to source positions, misspelled keys get a "did you mean".
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.tokens import (
    BlockEndToken,
    BlockMappingStartToken,
    BlockSequenceStartToken,
    FlowMappingEndToken,
    FlowMappingStartToken,
    FlowSequenceEndToken,
    FlowSequenceStartToken,
)

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ProtocolProblem:
    """One thing wrong with a protocol, located in its file (line and col are 1-based)."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file  # line 0: not from a file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ProtocolError(ValueError):
    """A protocol that cannot be used; `problems` lists every problem found, one line each."""

    def __init__(self, problems: Sequence[ProtocolProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_field(path: Iterable[str | int]) -> str:
    """("space", "anneal_temp", "low") -> "space.anneal_temp.low"; ("constraints", 1) -> "constraints[1]"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class SourceMap:
    """Positions of the keys and values of one loaded YAML document."""

    def __init__(self, file: str, root: Any) -> None:
        self.file = file
        self.root = root

    def locate(self, path: FieldPath) -> tuple[FieldPath, int, int]:
        """The part of `path` present in the file, and the 1-based line/col of its deepest element.

        Path elements the file does not contain (pydantic's union tags, a missing key) are skipped; a
        trailing missing key is kept in the returned path so the message can name it.
        """
        node, line, col = self.root, 0, 0
        found: FieldPath = ()
        for i, part in enumerate(path):
            position = _child_position(node, part)
            if position is None:
                missing_key = i == len(path) - 1 and isinstance(node, CommentedMap) and isinstance(part, str)
                if missing_key and isinstance(part, str) and not part.startswith("["):
                    found += (part,)
                continue
            line, col = position
            node = node[part]
            found += (part,)
        return found, line + 1, col + 1

    def problem(self, path: FieldPath, message: str) -> ProtocolProblem:
        found, line, col = self.locate(path)
        return ProtocolProblem(self.file, line, col, format_field(found), message)


class FieldSourceMap(SourceMap):
    """A document that was never a file the user can open (a protocol written as a Python dict):
    problems name the field only."""

    def problem(self, path: FieldPath, message: str) -> ProtocolProblem:
        found, _, _ = self.locate(path)
        return ProtocolProblem(self.file, 0, 0, format_field(found), message)


class MovedSourceMap(SourceMap):
    """A document seen from one of its parts: paths starting with `key` are looked up under `prefix`
    (a workflow step's `instrument` checked as if it were the protocol's own, located where it is)."""

    def __init__(self, inner: SourceMap, key: str, prefix: FieldPath) -> None:
        super().__init__(inner.file, inner.root)
        self.inner, self.key, self.prefix = inner, key, prefix

    def problem(self, path: FieldPath, message: str) -> ProtocolProblem:
        moved = (*self.prefix, *path) if path[:1] == (self.key,) else path
        return self.inner.problem(moved, message)


def _child_position(node: Any, part: str | int) -> tuple[int, int] | None:
    """Where `node[part]` is written: the value for scalars, the key for nested mappings and lists."""
    if isinstance(node, CommentedMap):
        if part not in node:
            return None
        child = node[part]
        return node.lc.key(part) if isinstance(child, CommentedMap | CommentedSeq) else node.lc.value(part)
    if isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
        return node.lc.item(part)
    return None


# Limits on what a protocol file can be. The examples are 2-4 KB and nest five levels (instrument.envelope.
# NAME.allowed[i]); these leave room for any real protocol and refuse, before the slow parts run, files
# that are mistakes or attacks. Reading YAML in pure Python takes about 6 s per 100 KB on a busy lab PC
# (compose + construct), so 64 KiB bounds the worst case near two seconds; deep nesting would otherwise
# end in the reader's RecursionError; 400 characters is more than any float or sensible count needs.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_NUMBER_CHARS = 400


def size_problem(file: str, size: int, *, at_least: bool = False) -> ProtocolProblem:
    """The problem of a protocol of `size` bytes (`at_least`: it was not read to the end)."""
    shown = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
    return ProtocolProblem(
        file, 1, 1, "",
        f"the file is {'more than ' if at_least else ''}{shown}; a protocol file may be at most {MAX_BYTES // 1024} KiB "
        "(protocols are a few KB: is this the right file? a candidate table belongs in a CSV named by candidates.path)",
    )


def load_yaml(text: str, file: str) -> tuple[dict[str, Any], SourceMap]:
    """Parse protocol text into plain dicts/lists/scalars and its source map.

    Raises `ProtocolError` for text larger than MAX_BYTES, a YAML syntax error, nesting deeper than
    MAX_DEPTH, a number longer than MAX_NUMBER_CHARS, duplicate keys, an empty file, or a top level that
    is not a mapping.
    """
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        raise ProtocolError([size_problem(file, size)])
    # Deep nesting is refused from the scanner's tokens, which stop at the first level too deep: the
    # composer would take seconds on 60 KB of brackets before failing with a RecursionError.
    too_deep = _first_too_deep(text)
    if too_deep is not None:
        raise ProtocolError([ProtocolProblem(file, *too_deep, "", _TOO_DEEP)])
    yaml = YAML(typ="rt", pure=True)
    try:
        node = yaml.compose(text)
        shape = list(_shape_problems(node))
        if shape:
            raise ProtocolError([ProtocolProblem(file, *where, format_field(path), msg) for path, where, msg in shape])
        duplicates = list(_duplicate_keys(node, ()))
        if duplicates:
            raise ProtocolError([ProtocolProblem(file, *where, format_field(path), msg) for path, where, msg in duplicates])
        root = None if node is None else yaml.constructor.construct_document(node)  # built from the nodes read once
    except RecursionError:
        # Nesting the scanner did not count (it runs out of stack all the same): the limit, unlocated.
        raise ProtocolError([ProtocolProblem(file, 1, 1, "", _TOO_DEEP)]) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        detail = str(e.problem or e.context or "").strip()
        if e.context and e.problem and e.context_mark is not None:
            detail += f" ({e.context.strip()} that starts at line {e.context_mark.line + 1})"
        raise ProtocolError([ProtocolProblem(file, line, col, "", f"YAML syntax error: {detail}")]) from None
    except YAMLError as e:
        raise ProtocolError([ProtocolProblem(file, 1, 1, "", f"YAML syntax error: {e}")]) from None
    if root is None:
        raise ProtocolError([ProtocolProblem(
            file, 1, 1, "", "the file is empty; a protocol is a YAML mapping with name, space, objectives, "
            "instrument and budget (copy one from protocols/)")])
    if not isinstance(root, CommentedMap):
        raise ProtocolError([ProtocolProblem(
            file, 1, 1, "", f"the top level must be a mapping of 'key: value' lines, not a {_yaml_kind(root)}")])
    try:
        return to_plain(root), SourceMap(file, root)
    except _TooComplex as e:
        raise ProtocolError([ProtocolProblem(file, 1, 1, "", f"{e}; write the values out instead")]) from None


def _duplicate_keys(
    node: Node | None, path: FieldPath, seen: set[int] | None = None
) -> Iterable[tuple[FieldPath, tuple[int, int], str]]:
    """Every key written twice in one mapping, found on the composed node tree (before construction).

    An alias is the same node object as its anchor: each node is visited once, so aliases that refer to
    themselves cannot recurse forever.
    """
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue  # a complex key ([a, b]: ...) is refused later as an unknown key
            key = key_node.value
            if key == "<<":  # a merge key may legitimately appear more than once
                continue
            if key in first_line:
                mark = key_node.start_mark
                yield (*path, key), (mark.line + 1, mark.column + 1), (
                    f"duplicate key {key!r} (first written on line {first_line[key]}); each key may appear once"
                )
            else:
                first_line[key] = key_node.start_mark.line + 1
            yield from _duplicate_keys(value_node, (*path, key), seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i), seen)


_TOO_DEEP = (f"nested more than {MAX_DEPTH} levels deep; a protocol needs five at most (instrument.envelope.NAME.allowed), "
             "so a bracket or an indentation is probably wrong here")
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _shape_problems(node: Node | None) -> Iterable[tuple[FieldPath, tuple[int, int], str]]:
    """Nesting deeper than MAX_DEPTH and numbers longer than MAX_NUMBER_CHARS, found on the composed
    node tree without recursion (so no depth can overflow the stack). Each node is visited once: an
    alias is the node it refers to, so aliases neither loop nor multiply the work."""
    seen: set[int] = set()
    stack: list[tuple[Node | None, FieldPath, int]] = [(node, (), 1)]
    while stack:
        current, path, depth = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        mark = current.start_mark
        if isinstance(current, ScalarNode):
            if current.tag in _NUMBER_TAGS and len(current.value) > MAX_NUMBER_CHARS:
                yield path, (mark.line + 1, mark.column + 1), (
                    f"a number of {len(current.value)} digits is no value a protocol needs (at most {MAX_NUMBER_CHARS})")
            continue
        if depth > MAX_DEPTH:
            yield path, (mark.line + 1, mark.column + 1), _TOO_DEEP
            return  # one report: everything below is deeper still
        if isinstance(current, MappingNode):
            for key_node, value_node in reversed(current.value):
                key = key_node.value if isinstance(key_node, ScalarNode) else "?"
                stack.append((value_node, (*path, key), depth + 1))
        elif isinstance(current, SequenceNode):
            stack.extend((item, (*path, i), depth + 1) for i, item in reversed(list(enumerate(current.value))))


def _first_too_deep(text: str) -> tuple[int, int] | None:
    """(line, col) where the text's nesting first passes MAX_DEPTH, from the YAML scanner's tokens (which
    keeps no stack of its own, and stops there); None when it never does, or when the scanner finds a
    syntax error first (the composer then reports it, located)."""
    opening = (BlockMappingStartToken, BlockSequenceStartToken, FlowMappingStartToken, FlowSequenceStartToken)
    closing = (BlockEndToken, FlowMappingEndToken, FlowSequenceEndToken)
    depth = 0
    try:
        for token in YAML(typ="rt", pure=True).scan(text):
            if isinstance(token, opening):
                depth += 1
                if depth > MAX_DEPTH:
                    return token.start_mark.line + 1, token.start_mark.column + 1
            elif isinstance(token, closing):
                depth -= 1
    except (YAMLError, RecursionError):
        pass
    return None


MAX_VALUES = 100_000  # a protocol is small; aliases nested in aliases could otherwise expand exponentially


class _TooComplex(ValueError):
    pass


def to_plain(value: Any, _inside: frozenset[int] = frozenset(), _count: list[int] | None = None) -> Any:
    """ruamel's round-trip types (CommentedMap, ScalarFloat, ...) as plain Python values.

    Raises `_TooComplex` for an alias that contains itself or a document that expands past MAX_VALUES.
    """
    count = [0] if _count is None else _count
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _TooComplex(f"the document expands to more than {MAX_VALUES} values (aliases inside aliases?)")
    if isinstance(value, dict | list):
        if id(value) in _inside:
            raise _TooComplex("an alias refers to a mapping or list that contains it")
        inside = _inside | {id(value)}
        if isinstance(value, dict):
            # Complex keys ([a, b]: ...) become their text so the schema can refuse them by name.
            return {
                (to_plain(k, inside, count) if isinstance(k, str | int | float) else str(k)): to_plain(v, inside, count)
                for k, v in value.items()
            }
        return [to_plain(v, inside, count) for v in value]
    if isinstance(value, ScalarBoolean):  # ruamel's booleans subclass int, not bool
        return bool(value)
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    return "string" if isinstance(value, str) else f"single value ({value!r})"


# --- pydantic's errors, located in the source and phrased for the person editing the file ---

_MAPPING = "a mapping ({key: value} or indented 'key: value' lines)"
_EXPECTED = {
    "model_type": _MAPPING, "model_attributes_type": _MAPPING, "dict_type": _MAPPING,
    "list_type": "a list ([a, b] or indented '- item' lines)", "string_type": "text",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_NON_EMPTY_HINT = {"space": "declare at least one parameter", "objectives": "declare at least one objective"}


def problems_from_validation_error(
    error: ValidationError, source: SourceMap, model: type[BaseModel], prefix: FieldPath = ()
) -> list[ProtocolProblem]:
    """One located problem per pydantic error of validating `source`'s data as `model`; `prefix` is
    where that data sits in the file when it is not the whole document (e.g. instrument.options)."""
    problems = []
    for e in error.errors():
        loc: FieldPath = tuple(e["loc"])
        at = (e.get("ctx") or {}).get("at")
        if at is not None:  # a model validator naming one of its own keys (protocol_sections.problem_at)
            loc += at if isinstance(at, tuple) else (at,)
        problems.append(source.problem((*prefix, *loc), _message(e, loc, model)))
    return sorted(problems, key=lambda p: (p.line, p.col))


def shown(value: Any) -> str:
    """`value` as a message quotes it: an enormous integer or text by its size, not in full (Python
    refuses to print an int of more than 4300 digits, and a 10,000-character line helps nobody)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _message(e: ErrorDetails, loc: FieldPath, model: type[BaseModel]) -> str:
    kind, ctx, raw, last = e["type"], e.get("ctx") or {}, e.get("input"), loc[-1] if loc else ""
    value = shown(raw)
    if kind == "located":  # drivers.options.located: a validator's own words about one key
        return str(ctx["message"])
    if kind == "missing":
        return f"required key {last!r} is missing"
    if kind == "extra_forbidden":
        return f"unknown key {last!r}" + _suggestion(str(last), _keys_at(model, loc[:-1]))
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", ""))) or [str(ctx.get("expected"))]
        return f"{value} is not allowed; use one of: {', '.join(expected)}" + _suggestion(raw if isinstance(raw, str) else value, expected, listed=False)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))) or _tags_at(model, loc)
        if kind == "union_tag_not_found":
            return f"missing key 'type': one of {', '.join(tags)}"
        return f"unknown type {ctx.get('tag')!r}; use one of: {', '.join(tags)}" + _suggestion(str(ctx.get("tag")), tags, listed=False)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value}"
    if kind == "finite_number":
        return f"must be a finite number, got {value} (.inf, .nan and numbers beyond ±1.8e308 are no limit); write the real value"
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()), "?")
        return f"must be {_BOUNDS[kind]} {limit}, got {value}"
    if kind == "too_short" and ctx.get("actual_length") == 0:
        return f"must not be empty; {_NON_EMPTY_HINT.get(str(last), 'give at least one entry')}"
    message = e["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if kind != "value_error" and isinstance(raw, str | int | float | bool):
        message += f", got {value}"
    return message


def _suggestion(word: str, choices: Sequence[str], *, listed: bool = True) -> str:
    close = get_close_matches(word, list(choices), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; allowed: {', '.join(choices)}" if listed and choices else ""


def _keys_at(model: type[BaseModel], loc: FieldPath) -> list[str]:
    """The keys the model allows at `loc` (pydantic locs include union tags, which pick the member)."""
    node: Any = model
    for part in loc:
        node = _child_type(node, part)
        if node is None:
            return []
    node = _strip(node)
    return list(node.model_fields) if _is_model(node) else []


def _tags_at(model: type[BaseModel], loc: FieldPath) -> list[str]:
    node: Any = model
    for part in loc:
        node = _child_type(node, part)
    members = [_strip(m) for m in get_args(_strip(node))] if node is not None else []
    return [tag for tag in map(_tag, members) if tag is not None]


def _child_type(node: Any, part: str | int) -> Any:
    node = _strip(node)
    if _is_model(node):
        field = node.model_fields.get(str(part))
        return None if field is None else field.annotation
    origin = get_origin(node)
    if origin is dict:
        return get_args(node)[1]
    if origin is list:
        return get_args(node)[0]
    if origin in (Union, UnionType):
        for member in map(_strip, get_args(node)):
            if _is_model(member) and part in (member.__name__, _tag(member)):
                return member
    return None


def _strip(node: Any) -> Any:
    """Annotated[X, ...] -> X; Optional[X] -> X."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
        elif get_origin(node) in (Union, UnionType) and len(members := [a for a in get_args(node) if a is not type(None)]) == 1:
            node = members[0]
        else:
            return node


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


def _tag(member: Any) -> str | None:
    field = member.model_fields.get("type") if _is_model(member) else None
    args = get_args(field.annotation) if field is not None else ()
    return str(args[0]) if args else None


def edit_protocol_text(text: str, edit: Callable[[CommentedMap], None]) -> tuple[str, dict[str, Any]]:
    """Protocol text changed by `edit` (which mutates the loaded document in place), keeping comments and
    order, and what changed: {top-level section: {"from": old, "to": new}} as plain JSON-ready values.
    Benchmarks and counterfactual replays derive their protocols this way, so the file they store says
    exactly how it differs from the original."""
    yaml = YAML()
    data = yaml.load(text)
    before = {str(k): _plain(v) for k, v in data.items()}
    edit(data)
    after = {str(k): _plain(v) for k, v in data.items()}
    changes = {k: {"from": before.get(k), "to": after.get(k)} for k in {*before, *after} if before.get(k) != after.get(k)}
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), changes


def _plain(value: Any) -> Any:
    """ruamel's round-trip containers as plain values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
