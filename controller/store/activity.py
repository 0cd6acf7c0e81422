"""What a campaign is doing now, which its stored status alone cannot say.

The file says `running` from the moment a run starts until it pauses or stops; a run that is SIGKILLed,
loses power or dies on a full disk never gets to write anything else. So a reader asks the writer lock
too: `running` with no live writer is `interrupted` (an engine ran and is gone: `resume` continues it),
or `idle` when no engine ever ran it (a campaign driven by hand with ask/tell, or a run killed before it
started).
"""

from __future__ import annotations

from dataclasses import dataclass

from closedloop.controller.store.locking import WriterInfo

# Journal kinds that mean an engine took the campaign over (written with the status "running").
ENGINE_STARTS = ("start", "resume")


@dataclass(frozen=True)
class Activity:
    """`status`: running | interrupted | idle | paused | stopped. `stored`: the status the file holds.
    `last_heard`: epoch seconds of the last thing written to the journal (event or command)."""

    status: str
    stored: str
    writer: WriterInfo
    last_heard: float | None

    @property
    def writer_gone(self) -> bool:
        return self.status in ("interrupted", "idle")


def activity_of(stored: str, writer: WriterInfo, *, engine_started: bool, last_heard: float | None) -> Activity:
    status = stored
    # alive None (the lock cannot be read, e.g. a permission problem): not knowing is not evidence of death.
    if stored == "running" and writer.alive is False:
        status = "interrupted" if engine_started else "idle"
    return Activity(status, stored, writer, last_heard)
