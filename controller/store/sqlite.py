"""sqlite-utils, imported without pandas.

sqlite-utils imports pandas when it is itself imported, if pandas is installed, only to recognise pandas
values (Timestamp, NA) handed to `insert`. The store inserts plain Python values and numpy numbers, never
pandas objects, and importing pandas costs about 0.4 s: most of what `closedloop status` took. So
sqlite-utils is imported here with pandas hidden for that one import, and every store module takes
`Database` from this module. If pandas is already loaded (a report, an export), nothing is hidden.
"""

from __future__ import annotations

import sys

if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
    import sqlite_utils
else:
    # A None entry makes `import pandas` raise ImportError, which sqlite-utils catches. This runs while
    # modules are imported, before the controller starts any thread.
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]

Database = sqlite_utils.Database

__all__ = ["Database"]
