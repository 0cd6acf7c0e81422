"""Reading a pool-mode candidate table (`candidates: {path: FILE.csv}`), and nothing else (issue 19).

The path is the protocol's to choose, so it could name any file on the machine, and an error used to
quote the file's first line. Only a regular `.csv` file of UTF-8 text within a stated size is read, and
no message here quotes what the file holds: a wrong file is named by its path and the rule it breaks.
"""

from __future__ import annotations

import codecs
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# A pool is a table of candidate points: the largest shipped is 50 KB; a million rows of a dozen
# numbers are about 100 MB, already past what a GP planner scores in reasonable time.
MAX_BYTES = 100 * 2**20
_SNIFF = 64 * 1024  # how much is read to tell text from binary before pandas reads the whole file


class CandidateFileError(ValueError):
    """The file cannot be the candidate table; the message names the path and says what to give."""


def read_candidate_table(path: Path) -> pd.DataFrame:
    """The table at `path`, or `CandidateFileError` saying why it is not a candidate table."""
    shown = repr(str(path))
    if path.suffix.lower() != ".csv":
        raise CandidateFileError(f"candidate table {shown} is not a .csv file; give a CSV table (comma-separated, "
                                 "one header row), e.g. candidates.csv")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CandidateFileError(f"candidate table {shown} does not exist") from None
    except OSError as e:
        raise CandidateFileError(f"cannot read candidate table {shown}: {e.strerror or type(e).__name__}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CandidateFileError(f"candidate table {shown} is not a regular file")
    if info.st_size > MAX_BYTES:
        raise CandidateFileError(f"candidate table {shown} is {info.st_size / 2**20:.0f} MiB; a candidate table may be "
                                 f"at most {MAX_BYTES // 2**20} MiB")
    _require_text(path, shown)
    import pandas as pd  # only pool-mode protocols need it: `validate` of the others stays fast

    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CandidateFileError(f"candidate table {shown} is not UTF-8 text (byte {e.start}); save it as a UTF-8 "
                                 "CSV file") from None
    except pd.errors.EmptyDataError:
        raise CandidateFileError(f"candidate table {shown} is empty; give a header row and one row per candidate") from None
    except pd.errors.ParserError as e:
        # pandas names a line and a field count ("Expected 3 fields in line 5, saw 4"); anything it quotes
        # from the file is cut off.
        reason = (str(e).splitlines() or [""])[0].split("'")[0].split('"')[0].strip(" :.")
        raise CandidateFileError(f"cannot read candidate table {shown} as CSV: {reason or 'malformed'}") from None
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise CandidateFileError(f"cannot read candidate table {shown}: {reason}") from None


def _require_text(path: Path, shown: str) -> None:
    """Refuse a binary or non-UTF-8 file from its first bytes (a NUL, or bytes UTF-8 cannot decode)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF)
            at_end = len(head) < _SNIFF
    except OSError as e:
        raise CandidateFileError(f"cannot read candidate table {shown}: {e.strerror or type(e).__name__}") from None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=at_end)  # not final mid-file: a character may straddle the cut
    except UnicodeDecodeError as e:
        raise CandidateFileError(f"candidate table {shown} is not UTF-8 text (byte {e.start}); save it as a UTF-8 "
                                 "CSV file") from None
    if b"\0" in head:
        raise CandidateFileError(f"candidate table {shown} is a binary file, not a CSV table")


__all__ = ["MAX_BYTES", "CandidateFileError", "read_candidate_table"]
