"""What the dashboard keeps between requests, so that twenty open pages cost the campaign's machine about
what one does: one look at a campaign file per poll however many pages stream it, one page state per
change (and at most one per event a page is told of), one model fit per new result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
Marker = tuple[int, ...]


class Throttled(Generic[T]):
    """`compute(path)` at most once per `interval` seconds per path; calls in between get the last value."""

    def __init__(self, compute: Callable[[Path], T], interval: float) -> None:
        self._compute = compute
        self._interval = interval
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[float, T]] = {}

    def get(self, path: Path) -> T:
        with self._lock:
            hit = self._cached.get(path)
            if hit is not None and time.monotonic() - hit[0] < self._interval:
                return hit[1]
            value = self._compute(path)
            self._cached[path] = (time.monotonic(), value)
            return value


class ComputedOnce(Generic[T]):
    """`compute(path)` kept until `version(path)` changes, however many pages ask meanwhile."""

    def __init__(self, version: Callable[[Path], object], compute: Callable[[Path], T]) -> None:
        self._version = version
        self._compute = compute
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[object, T]] = {}

    def get(self, path: Path) -> T:
        with self._lock:  # one computation at a time: twenty pages asking at once wait for the first
            version = self._version(path)
            hit = self._cached.get(path)
            if hit is not None and hit[0] == version:
                return hit[1]
            value = self._compute(path)
            self._cached[path] = (version, value)
            return value


class StateCache:
    """A campaign page's state, serialised once. A page told of a change (the event carries the file's
    marker) gets a state at least that new; one that was computed for a newer marker already serves every
    other page told of the same change, even if the campaign has written again since: a campaign in
    virtual time writes many times a second, and recomputing for each page would cost a state per page."""

    def __init__(self, markers: Throttled[Marker], compute: Callable[[Path], bytes]) -> None:
        self._markers = markers
        self._compute = compute
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[Marker, bytes]] = {}

    def get(self, path: Path, at_least: Marker | None = None) -> bytes:
        with self._lock:
            hit = self._cached.get(path)
            if hit is not None and at_least is not None and _not_older(hit[0], at_least):
                return hit[1]
            marker = self._markers.get(path)  # read before computing: the state is at least this new
            if hit is not None and hit[0] == marker:
                return hit[1]
            value = self._compute(path)
            self._cached[path] = (marker, value)
            return value


def _not_older(marker: Marker, than: Marker) -> bool:
    """Every part of a marker only grows (ids, counts, a modification time): newer or equal in each."""
    return len(marker) == len(than) and all(a >= b for a, b in zip(marker, than, strict=True))
