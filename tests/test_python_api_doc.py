"""docs/python-api.md runs as written: every `>>>` example, in a scratch folder with the protocols."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from tests import paths

DOC = paths.ROOT / "docs" / "python-api.md"


@pytest.mark.slow
def test_the_python_api_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "protocols").symlink_to(paths.PROTOCOLS, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                              verbose=False, report=True)
    assert result.attempted >= 10
    assert result.failed == 0
    assert (tmp_path / "notebook.sqlite").exists() and (tmp_path / "furnace.html").exists()
    assert not (tmp_path / "broken.sqlite").exists()  # a refused protocol writes no file


def test_the_ask_tell_loop_fits_in_twenty_lines() -> None:
    """The issue's promise: a 2-parameter ask/tell loop against a Python function in under 20 lines."""
    text = DOC.read_text()
    loop = text[text.index(">>> import closedloop"): text.index('>>> best["values"]')]
    assert len(loop.strip().splitlines()) < 20
