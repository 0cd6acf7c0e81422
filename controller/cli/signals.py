"""Process signals for commands that run for a long time: handlers installed for a block, then restored."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any


@contextmanager
def handled_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` inside the block, and back to their previous handlers after it,
    so a command run in-process (a notebook, a test) leaves its host's signals as they were. Installed
    explicitly: a shell starts background jobs with SIGINT ignored, and Python would inherit that."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pause_on_signals() -> AbstractContextManager[None]:
    """Ctrl-C and SIGTERM (a service manager, `kill`) both pause the campaign cleanly."""
    return handled_signals(_interrupt)
