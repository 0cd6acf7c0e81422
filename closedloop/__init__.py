"""closedloop: closed-loop autonomous experiments for materials labs.

This folder is the import root. The layers live in the repository's top-level folders and install
under it (pyproject.toml maps them): `closedloop.controller`, `closedloop.drivers`,
`closedloop.planners`, `closedloop.simulators`. What every layer shares, and nothing else, lives
here: `closedloop.records` (values, conditions) and `closedloop.units` (the one unit registry).

    >>> import closedloop
    >>> closedloop.__version__
    '0.1.0'
"""

from closedloop.version import __version__

__all__ = ["__version__"]
