"""Malformed inputs for the commands a user feeds files to, and the promise each command keeps.

Generators (hypothesis strategies) of broken protocols, results CSVs and campaign files, built by
mutating the real thing: an example protocol with a value swapped for an adversarial token, a line
dropped or garbage bytes spliced in; a results CSV in the wrong encoding, with odd cells and columns;
a campaign file truncated, overwritten in places, or with a table dropped or a column full of junk.

`Outcome.problems()` states the promise (issue 19): the command ends with exit 0, 1 or 2 (never a
Python traceback), a refused input changes nothing in the campaign file, and it answers quickly.
tests/test_fuzz.py runs a bounded, seeded number of examples in process (`make test`);
benchmarks/fuzz_inputs.py runs many more, each in a real subprocess, and records time and memory.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from tests import paths

EXAMPLE_PROTOCOLS = sorted(paths.PROTOCOLS.glob("*.yaml"))

# Tokens that have broken parsers before, or that YAML reads as something other than the author meant.
ADVERSARIAL_VALUES = [
    ".inf", "-.inf", ".nan", "1e999", "-1e999", "1e308 * 10", "0", "-0", "-1", "1e-320", "123456789012345678901234567890",
    "''", "null", "~", "[]", "{}", "yes", "no", "on", "0x1F", "1_000", "2026-12-07", "12:30:00", "'1e3 degC'",
    "'3 furlong'", "'nan degC'", "'inf K'", "'-5 ns'", "&a [*a]", "*undefined", "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=", '"\\x00"', "'\u00e9\u00e8'", "[1, [2, [3]]]", "{low: 1}", "{type: float, low: 5, high: 1}",
    "'{value:.1f}{value}'", "'x1 ** 999999'", "'1e308 * 1e308 <= 1'", "'__import__(\"os\")'", "'x' * 3",
    "|\n  multi\n  line", "[" * 60 + "]" * 60, "'" + "a" * 5000 + "'",
]

# What a person or a spreadsheet puts in a results cell.
ADVERSARIAL_CELLS = [
    "", " ", "1", "2", "3", "99", "-1", "0", "1.5", "2.1e-3", "180 ns", "180", "-180 ns", "nan", "NaN", "inf", "-inf",
    "1e999", "1,5", "#N/A", "#DIV/0!", "=1+1", "failed", "ok", "FAILED", "3 furlong", "0.002 cm^2/(V*s)", "\u00e9",
    "\x00", '"quoted, with comma"', "1e-320", "0x10",
]
CSV_COLUMNS = ["trial", "phi_sum_mu_max", "tau_half", "status", "note", "bogus", "Trial", " trial"]
TEXT_ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]


@dataclass(frozen=True)
class Outcome:
    """What one command did with one input."""

    command: str
    exit_code: int | None  # None: the command raised instead of exiting
    output: str
    seconds: float
    file_changed: bool  # the campaign file's bytes differ from before
    error: str = ""  # the exception a command raised instead of exiting, "Type: message"

    def problems(self, *, may_change: bool = False, max_seconds: float = 20.0) -> list[str]:
        """The promises this outcome broke (empty when it kept them all)."""
        found = []
        if self.exit_code not in (0, 1, 2):
            found.append(f"exit {self.exit_code} {self.error}".strip())
        if "Traceback (most recent call last)" in self.output or self.error:
            found.append(f"a traceback: {self.error or self.output[-400:]}")
        if self.file_changed and not (may_change and self.exit_code == 0):
            found.append(f"exit {self.exit_code} but the campaign file changed")
        if self.seconds > max_seconds:
            found.append(f"took {self.seconds:.1f} s")
        return found


def file_digest(path: Path) -> str:
    """The bytes of `path` (and of its write-ahead log, where SQLite left one), as one digest."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + "-wal")):
        if part.is_file():
            digest.update(part.read_bytes())
    return digest.hexdigest()


# ---- protocols -------------------------------------------------------------------------------------


def _replace_value(text: str, line: int, token: str) -> str:
    lines = text.splitlines()
    if not lines:
        return token
    i = line % len(lines)
    key, colon, _ = lines[i].partition(": ")
    lines[i] = f"{key}: {token}" if colon else f"{lines[i]} {token}"
    return "\n".join(lines) + "\n"


def _edit_lines(text: str, line: int, how: str) -> str:
    lines = text.splitlines()
    if not lines:
        return text
    i = line % len(lines)
    if how == "drop":
        del lines[i]
    elif how == "duplicate":
        lines.insert(i, lines[i])
    elif how == "indent":
        lines[i] = "  " + lines[i]
    elif how == "dedent":
        lines[i] = lines[i].lstrip()
    elif how == "tab":
        lines[i] = "\t" + lines[i]
    return "\n".join(lines) + "\n"


@st.composite
def protocol_bytes(draw: st.DrawFn) -> bytes:
    """An example protocol with one to three mutations, as the bytes of a file."""
    text = draw(st.sampled_from(EXAMPLE_PROTOCOLS)).read_text()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "value", "lines", "truncate", "nest"]))
        line = draw(st.integers(0, 10_000))
        if kind == "value":
            text = _replace_value(text, line, draw(st.sampled_from(ADVERSARIAL_VALUES)))
        elif kind == "lines":
            text = _edit_lines(text, line, draw(st.sampled_from(["drop", "duplicate", "indent", "dedent", "tab"])))
        elif kind == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        else:
            depth = draw(st.sampled_from([10, 200, 2_000, 20_000]))
            text = _replace_value(text, line, "[" * depth + "]" * depth)
    data = text.encode()
    if draw(st.booleans()) and draw(st.booleans()):  # a quarter of them get raw bytes spliced in
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
    return data


# ---- results CSVs ----------------------------------------------------------------------------------


@st.composite
def results_csv_bytes(draw: st.DrawFn) -> bytes:
    """A results file for `tell --csv` on a TRMC campaign with trials 1-3 handed out and trial 1 told."""
    cell = st.one_of(st.sampled_from(ADVERSARIAL_CELLS), st.text(max_size=6))
    plausible_file = draw(st.booleans())
    if plausible_file:  # a file a person would write, one cell in eight odd: some are recorded whole
        columns = ["trial", "phi_sum_mu_max", "tau_half"] + draw(st.lists(st.just("status"), max_size=1))
        plausible = st.sampled_from(["2.1e-3", "0.0015", "1.2e-3 cm^2/(V*s)", "150"])
        value = st.one_of(*[plausible] * 7, cell)
        trials = draw(st.lists(st.sampled_from(["2", "3"]), min_size=1, max_size=2, unique=True))  # 1 is told
        rows = [[t, draw(value), draw(st.one_of(*[st.sampled_from(["180 ns", "0.2 us", "150"])] * 7, cell))]
                + [""] * (len(columns) - 3) for t in trials]
    else:
        columns = draw(st.lists(st.sampled_from(CSV_COLUMNS), min_size=0, max_size=5))
        rows = draw(st.lists(st.lists(cell, min_size=0, max_size=len(columns) + 1), max_size=4))

    text = "\n".join(",".join(_csv_cell(c) for c in r) for r in [columns, *rows]) + draw(st.sampled_from(["\n", "\r\n", ""]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"] if plausible_file else TEXT_ENCODINGS))
    data = text.encode(encoding, errors="replace")
    if not plausible_file and draw(st.integers(0, 5)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


# ---- earlier results for `import` -----------------------------------------------------------------

TRMC_COLUMNS = ["acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent", "phi_sum_mu_max", "tau_half"]
PLAUSIBLE_TRMC = {
    "acceptor_fraction": ["0.3", "0.55", "0.8", "0.9"],  # 0.9: outside the space, kept and flagged
    "anneal_temp": ["80", "150 degC", "423 K", "199.5"],
    "anneal_time": ["5", "10 min", "0.25 h", "30"],
    "spin_speed": ["1000", "2500", "3900", "4000 rpm"],
    "solvent": ["chlorobenzene", "Chloroform", "o-dichlorobenzene"],
    "phi_sum_mu_max": ["2.1e-3", "0.0015", "1e-4 cm^2/(V*s)"],
    "tau_half": ["180 ns", "0.2 us", "95"],
}


@st.composite
def earlier_results_csv_bytes(draw: st.DrawFn) -> bytes:
    """A table of earlier results for `import --csv` into a TRMC campaign: half of them plausible (one
    cell in eight odd, columns shuffled or headed with units), half built from broken parts."""
    cell = st.one_of(st.sampled_from(ADVERSARIAL_CELLS), st.text(max_size=6))
    if draw(st.booleans()):
        columns = draw(st.permutations(TRMC_COLUMNS))
        headers = [f"{c} [K]" if c == "anneal_temp" and draw(st.booleans()) else c for c in columns]
        rows = [[draw(st.one_of(*[st.sampled_from(PLAUSIBLE_TRMC[c])] * 7, cell)) for c in columns]
                for _ in range(draw(st.integers(1, 4)))]
        rows = [[("423" if h.endswith("[K]") and v in ("80", "199.5") else v) for h, v in zip(headers, r, strict=True)]
                for r in rows]
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"]))
    else:
        headers = draw(st.lists(st.sampled_from([*TRMC_COLUMNS, "status", "trial", "bogus"]), max_size=8))
        rows = draw(st.lists(st.lists(cell, max_size=len(headers) + 1), max_size=4))
        encoding = draw(st.sampled_from(TEXT_ENCODINGS))
    text = "\n".join(",".join(_csv_cell(c) for c in r) for r in [headers, *rows]) + "\n"
    return text.encode(encoding, errors="replace")


def _csv_cell(c: str) -> str:
    return '"' + c.replace('"', '""') + '"' if ("," in c or '"' in c or "\n" in c) else c


# ---- campaign files --------------------------------------------------------------------------------

Mutation = Callable[[Path], None]


def sql(statement: str) -> Mutation:
    def run(path: Path) -> None:
        db = sqlite3.connect(path)
        try:
            db.execute(statement)
            db.commit()
        except sqlite3.DatabaseError:
            pass  # a statement that does not apply to this file's schema leaves it as it was
        finally:
            db.close()

    run.__name__ = statement
    return run


def _truncate(fraction: float) -> Mutation:
    def run(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    run.__name__ = f"truncate to {fraction:.0%}"
    return run


def _overwrite(offset_fraction: float, junk: bytes) -> Mutation:
    def run(path: Path) -> None:
        data = bytearray(path.read_bytes())
        at = int(len(data) * offset_fraction)
        data[at : at + len(junk)] = junk
        path.write_bytes(bytes(data))

    run.__name__ = f"overwrite {len(junk)} bytes at {offset_fraction:.0%}"
    return run


def _tables(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    finally:
        db.close()


def _columns(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return [(t, c[1]) for t in _tables(path) for c in db.execute(f'PRAGMA table_info("{t}")')]
    finally:
        db.close()


def campaign_mutations(template: Path) -> st.SearchStrategy[list[Mutation]]:
    """One to three ways of breaking a campaign file shaped like `template`."""
    tables, columns = _tables(template), _columns(template)
    junk_values = ["NULL", "''", "'zzz'", "-1", "1e999", "'{not json'", "'[1,2'", "X'00ff'", "99999999999"]
    by_sql = st.one_of(
        st.sampled_from(tables).map(lambda t: sql(f'DROP TABLE "{t}"')),
        st.sampled_from(tables).map(lambda t: sql(f'DELETE FROM "{t}"')),
        st.sampled_from(tables).map(lambda t: sql(f'ALTER TABLE "{t}" RENAME TO "{t}_old"')),
        st.tuples(st.sampled_from(columns), st.sampled_from(junk_values)).map(
            lambda tc: sql(f'UPDATE "{tc[0][0]}" SET "{tc[0][1]}" = {tc[1]}')
        ),
        st.integers(-1, 10_000).map(lambda v: sql(f"PRAGMA user_version = {v}")),
    )
    by_bytes = st.one_of(
        st.floats(0.0, 0.999).map(_truncate),
        st.tuples(st.floats(0.0, 0.999), st.binary(min_size=1, max_size=64)).map(lambda a: _overwrite(*a)),
    )
    return st.lists(st.one_of(by_sql, by_sql, by_bytes), min_size=1, max_size=3)


def broken_copy(template: Path, mutations: list[Mutation], target: Path) -> Path:
    """A copy of the campaign file `template` at `target`, with `mutations` applied in order."""
    shutil.copyfile(template, target)
    for mutate in mutations:
        mutate(target)
    for leftover in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        leftover.unlink(missing_ok=True)
    return target
