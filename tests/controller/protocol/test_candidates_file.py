"""`candidates: {path: ...}` reads a CSV table and nothing else, and never quotes the file (issue 19).

The path is the protocol's to choose: it could name any file on the machine, and an error used to print
that file's first line (the table's headers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.protocol.edits import POOL, edited, refused_at, validate_cli

SECRET = "TOPSECRET-hunter2"
PATH = "path: data/melting_points.csv"


def pool_reading(tmp_path: Path, target: str) -> tuple[Path, int]:
    bad = edited(tmp_path, POOL, (PATH, f"path: {target}"))
    return bad.path, bad.line_of(f"path: {target}")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("secrets.txt", f"{SECRET}\n", "is not a .csv file"),
    ("id_rsa", f"-----BEGIN {SECRET}-----\n", "is not a .csv file"),
    ("image.csv", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + SECRET.encode(), "is not UTF-8 text"),
    ("zeros.csv", b"a,b\n\0\0\0" + SECRET.encode(), "is a binary file"),
    ("missing.csv", None, "does not exist"),
    ("empty.csv", b"", "is empty"),
])
def test_only_a_csv_text_file_is_read(tmp_path: Path, name: str, content: bytes | str | None, words: str) -> None:
    if isinstance(content, str):
        (tmp_path / name).write_text(content)
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    path, line = pool_reading(tmp_path, str(tmp_path / name))
    result = validate_cli(str(path))
    refused_at(result, path, line, "candidates.path", words)
    assert SECRET not in result.stderr and "Traceback" not in result.stderr


def test_a_directory_named_csv_is_refused(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    path, line = pool_reading(tmp_path, str(tmp_path / "folder.csv"))
    refused_at(validate_cli(str(path)), path, line, "candidates.path", "is not a regular file")


def test_a_csv_that_does_not_fit_is_refused_without_quoting_its_headers_or_cells(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text(f"{SECRET},x_A\nvalue-{SECRET},7\n")
    path, line = pool_reading(tmp_path, str(tmp_path / "other.csv"))
    result = validate_cli(str(path))
    refused_at(result, path, line, "candidates.path", "no column for parameter 'Z_mean' (2 columns)")
    refused_at(result, path, line, "candidates.path", "candidate rows have x_A not inside", "data row 1")
    assert SECRET not in result.stderr
