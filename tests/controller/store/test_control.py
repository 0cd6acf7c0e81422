"""The control file beside a campaign (`<campaign>.control`): requests in, outcomes out, and a damaged file
never stops the campaign that reads it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from closedloop.controller.engine.remote import RemoteOperator
from closedloop.controller.store.control import ControlChannel, ControlFileError, control_path


def test_requests_are_kept_in_order_and_answered_once(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path / "c.sqlite")
    assert channel.unhandled() == [] and not control_path(tmp_path / "c.sqlite").exists()  # reading creates nothing
    first = channel.submit("pause", "ann")
    second = channel.submit("edit", "bob", trial_id=4, edited={"temp": 450.0, "gas": "Ar"})
    assert [r.id for r in channel.unhandled()] == [first, second]
    assert channel.unhandled()[1].edited == {"temp": 450.0, "gas": "Ar"}
    channel.mark(first, "pause: taken")
    channel.mark(first, "a second answer is ignored")
    assert [r.id for r in channel.unhandled()] == [second]
    assert channel.recent()[1].outcome == "pause: taken"
    assert channel.expire("the campaign restarted") == 1
    assert channel.recent()[0].outcome == "expired: the campaign restarted" and channel.unhandled() == []


@pytest.mark.parametrize(("action", "trial_id", "message"), [
    ("launch", None, "unknown control action 'launch'"),
    ("accept", None, "'accept' needs trial id"),
    ("pause", 3, "'pause' takes no trial id"),
])
def test_a_malformed_request_is_refused(tmp_path: Path, action: str, trial_id: int | None, message: str) -> None:
    channel = ControlChannel(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match=message):
        channel.submit(action, "ann", trial_id=trial_id)  # type: ignore[arg-type]
    assert not channel.path.exists()


def test_a_damaged_control_file_is_reported_once_and_the_campaign_goes_on(tmp_path: Path, caplog) -> None:
    channel = ControlChannel(tmp_path / "c.sqlite")
    channel.path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(ControlFileError, match="the control file cannot be used"):
        channel.unhandled()
    operator = RemoteOperator(channel, sleep=lambda s: None)
    with caplog.at_level(logging.WARNING):
        operator.start()
        assert operator.requests() == [] and operator.requests() == []
    warnings = [r for r in caplog.records if "cannot control this campaign" in r.getMessage()]
    assert len(warnings) == 1


def test_rows_closedloop_did_not_write_are_answered_and_never_carried_out(tmp_path: Path) -> None:
    import sqlite3

    channel = ControlChannel(tmp_path / "c.sqlite")
    good = channel.submit("pause", "ann")
    with sqlite3.connect(channel.path) as db:
        db.execute("INSERT INTO requests (at, action, trial_id, edited, by) VALUES (1, 'edit', 2, '{not json', 'x')")
        db.execute("INSERT INTO requests (at, action, trial_id, edited, by) VALUES (1, 'edit', 2, '[1, 2]', 'x')")
        db.execute("INSERT INTO requests (at, action, trial_id, edited, by) VALUES (1, 'accept', '<b>2</b>', NULL, 'x')")
    operator = RemoteOperator(channel, sleep=lambda s: None)
    assert [r.action for r in operator.requests()] == ["pause"]
    with sqlite3.connect(channel.path) as db:
        outcomes = dict(db.execute("SELECT id, outcome FROM requests").fetchall())
    assert outcomes[good] == "pause: taken"
    assert sorted(o for i, o in outcomes.items() if i != good) == ["ignored: not a request closedloop can read"] * 3
    assert [r.id for r in channel.recent()] == [good]  # the page lists only requests it can show


def test_a_control_file_deleted_and_made_again_is_read_from_its_first_request(tmp_path: Path) -> None:
    channel = ControlChannel(tmp_path / "c.sqlite")
    operator = RemoteOperator(channel, sleep=lambda s: None)
    channel.submit("pause", "ann")
    assert [r.action for r in operator.requests()] == ["pause"]
    channel.path.unlink()  # what the error message for a damaged file tells the operator to do
    assert channel.submit("abort", "ann") == 1  # numbered from 1 again
    assert [r.action for r in operator.requests()] == ["abort"]
