"""closedloop: closed-loop autonomous experiments for materials labs.

This folder is the import root. The layers live in the repository's top-level folders and install
under it (pyproject.toml maps them): `closedloop.controller`, `closedloop.drivers`,
`closedloop.planners`, `closedloop.simulators`. What every layer shares, and nothing else, lives
here: `closedloop.records` (values, conditions) and `closedloop.units` (the one unit registry).

The Python API is loaded when first used, so `import closedloop` stays instant:

    >>> import closedloop
    >>> closedloop.__version__
    '0.1.0'
    >>> closedloop.load_protocol("protocols/mbe_srruo3.yaml").name
    'srruo3-mbe'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from closedloop.version import __version__

_API = {
    "Campaign": "closedloop.controller.campaign",
    "Halt": "closedloop.controller.engine.halts",
    "load_protocol": "closedloop.controller.protocol.model",
    "validate_protocol": "closedloop.controller.protocol.validate",
}

if TYPE_CHECKING:
    from closedloop.controller.campaign import Campaign
    from closedloop.controller.engine.halts import Halt
    from closedloop.controller.protocol.model import load_protocol
    from closedloop.controller.protocol.validate import validate_protocol


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'closedloop' has no attribute {name!r}")


__all__ = ["Campaign", "Halt", "__version__", "load_protocol", "validate_protocol"]
