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
