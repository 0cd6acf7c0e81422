"""Where things are, for tests in any folder below this one."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
PROTOCOLS = ROOT / "protocols"
DATA = ROOT / "tests" / "data"
