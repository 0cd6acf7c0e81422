"""The `closedloop` command line: click commands that parse, call the library, print and exit.

The only package that imports click and rich. Exit codes: 0 ok, 1 the campaign or instrument failed,
2 bad input, 130 paused by the operator.
"""

from closedloop.controller.cli.main import main

__all__ = ["main"]
