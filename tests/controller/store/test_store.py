"""The campaign store on real SQLite files: lifecycle, journal, measurements, reanalysis, reads."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from closedloop.controller.store.artifacts import decode_artifact, encode_artifact
from closedloop.controller.store.campaign_store import (
    AlreadyMeasured,
    CampaignFileError,
    CampaignStore,
    InvalidTransition,
    UnknownTrial,
)
from closedloop.controller.store.errors import ReadOnlyCampaign, StoreError
from closedloop.controller.store.lifecycle import STATES, TRANSITIONS
from closedloop.drivers.base import Measurement
from closedloop.planners.provenance import Provenance

PROTOCOL = "name: demo\nspace:\n  anneal_temp: {type: float, low: 60, high: 200, unit: degC}\n"


def new_store(path: Path, **overrides: object) -> CampaignStore:
    """A fresh campaign file (a writer) with a tiny protocol."""
    arguments: dict = dict(
        name="demo", protocol_text=PROTOCOL, protocol_path="protocols/demo.yaml", seed=7, versions={"closedloop": "t"}
    )
    arguments.update(overrides)
    return CampaignStore.create(path, **arguments)


def dispatched_trial(store: CampaignStore, conditions: dict | None = None) -> int:
    trial_id = store.add_trial(conditions or {"anneal_temp": 120.0}, proposer="sobol", origin="initial")
    store.transition(trial_id, "approved")
    store.transition(trial_id, "dispatched", instrument="station-1")
    return trial_id


def ok(values: dict[str, float], **fields: object) -> Measurement:
    return Measurement(values=values, units={name: "ns" for name in values}, analysis="fit", analysis_version="1",
                       **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CampaignStore]:
    with new_store(tmp_path / "run.sqlite") as s:
        yield s


def table_rows(path: Path, sql: str) -> list[tuple]:
    """Raw rows, read with plain sqlite3: what is really in the file, not what the store reports."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# ------------------------------------------------------------------------ the campaign row


def test_create_records_protocol_versions_and_settings(tmp_path: Path) -> None:
    with new_store(tmp_path / "c.sqlite", parent="old.sqlite", metadata={"operator": "ana"}) as s:
        info = s.campaign()
        assert info["name"] == "demo"
        assert info["protocol_text"] == PROTOCOL
        assert info["protocol_sha256"] == hashlib.sha256(PROTOCOL.encode()).hexdigest()
        assert info["protocol_path"] == "protocols/demo.yaml"
        assert info["versions"]["closedloop"] == "t"  # the caller's value wins over package metadata
        assert info["versions"]["sqlite"] == sqlite3.sqlite_version
        assert {"python", "torch", "botorch", "gpytorch", "numpy"} <= set(info["versions"])
        assert (info["seed"], info["status"], info["parent"]) == (7, "running", "old.sqlite")
        assert info["metadata"] == {"operator": "ana"}
        assert s.schema_version == info["schema_version"] == 1
        assert [e["kind"] for e in s.events()] == ["created"]
    assert table_rows(tmp_path / "c.sqlite", "PRAGMA journal_mode") == [("wal",)]


def test_create_refuses_an_existing_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    new_store(path).close()
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        new_store(path, name="other")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "creating" in p.name] == []



def test_writers_fsync_every_commit_unless_told_it_is_a_simulation(tmp_path: Path) -> None:
    with new_store(tmp_path / "live.sqlite") as live:
        assert live._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with CampaignStore.open(tmp_path / "live.sqlite", writer=True, durable=False) as replay:
        assert replay._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        replay.record_event("note", detail="fast path still commits")
    with CampaignStore.open(tmp_path / "live.sqlite") as reader:
        assert reader.events(limit=1)[0]["detail"] == "fast path still commits"

def test_open_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError, match="no campaign file") as info:
        CampaignStore.open(tmp_path / "nope.sqlite")
    assert str(tmp_path / "nope.sqlite") in str(info.value)
    assert not (tmp_path / "nope.sqlite").exists()


def test_open_refuses_files_that_are_not_campaigns(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.sqlite"
    text_file.write_text("hello, not a database\n" * 20)
    with pytest.raises(CampaignFileError, match="not a SQLite database"):
        CampaignStore.open(text_file)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(CampaignFileError, match="not a closedloop campaign"):
        CampaignStore.open(other, writer=True)


@pytest.mark.parametrize(("sql", "missing", "readable"), [
    ("DROP TABLE events", "table events is missing", False),
    ("ALTER TABLE trials DROP COLUMN detail", "table trials has no column detail", False),
    ("DROP INDEX measurements_current", "index measurements_current is missing", True),
    ("DROP TRIGGER events_append_only_update", "trigger events_append_only_update is missing", True),
])
def test_a_campaign_altered_outside_closedloop_is_refused_by_what_it_lacks(
    tmp_path: Path, sql: str, missing: str, readable: bool
) -> None:
    path = tmp_path / "altered.sqlite"
    new_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    before = path.read_bytes()
    # Without the check, sqlite-utils would create a dropped table again, empty, on the next insert.
    with pytest.raises(CampaignFileError, match=f"damaged \\({missing}\\)"):
        CampaignStore.open(path, writer=True)
    if readable:  # an index or trigger guards writes; the data are all there for reading
        with CampaignStore.open(path) as reader:
            assert [e["kind"] for e in reader.events()] == ["created"]
    else:
        with pytest.raises(CampaignFileError, match=missing):
            CampaignStore.open(path)
    assert path.read_bytes() == before


def test_set_status_updates_the_campaign_and_journals_it(store: CampaignStore) -> None:
    store.set_status("paused", virtual_t=5.0)
    store.set_status("stopped", stop_reason="budget: 40 trials", virtual_t=9.0)
    info = store.campaign()
    assert (info["status"], info["stop_reason"]) == ("stopped", "budget: 40 trials")
    assert info["stopped_at"] is not None
    events = store.events(kinds=["pause", "stop"])
    assert [(e["kind"], e["from_state"], e["to_state"], e["virtual_t"]) for e in events] == [
        ("pause", "running", "paused", 5.0),
        ("stop", "paused", "stopped", 9.0),
    ]
    assert events[1]["detail"] == "budget: 40 trials"
    store.set_status("running")
    assert store.campaign()["stop_reason"] is None
    assert store.events(limit=1)[0]["kind"] == "resume"
    with pytest.raises(ValueError, match="running"):
        store.set_status("finished")


# ------------------------------------------------------------------------ trials and their lifecycle


def test_a_trial_walks_its_lifecycle_with_one_event_per_change(store: CampaignStore) -> None:
    provenance = Provenance(planner="gp", planner_version="2", seed=11, data_hash="abc",
                            acquisition="qLogNEI", acquisition_value=-1.25, hyperparameters={"ls": [0.3]})
    tid = store.add_trial({"anneal_temp": 150.0, "solvent": "chloroform", "spin_speed": 1200},
                          proposer="gp", origin="planner", provenance=provenance, virtual_t=1.0)
    assert tid == 1
    store.transition(tid, "approved", detail="auto", virtual_t=2.0)
    store.transition(tid, "dispatched", instrument="trmc-1", virtual_t=3.0)
    store.transition(tid, "running", virtual_t=4.0)
    store.record_measurement(tid, ok({"tau_half": 12.5}, duration_s=30.0), virtual_t=5.0)

    trial = store.trial(tid)
    assert trial.state == "measured"
    assert trial.conditions == {"anneal_temp": 150.0, "solvent": "chloroform", "spin_speed": 1200}
    assert isinstance(trial.conditions["spin_speed"], int)
    assert (trial.proposer, trial.origin, trial.attempt, trial.instrument) == ("gp", "planner", 1, "trmc-1")
    assert (trial.values, trial.units, trial.measurement_status) == ({"tau_half": 12.5}, {"tau_half": "ns"}, "ok")
    assert trial.duration_s == 30.0
    states = [(e["from_state"], e["to_state"], e["virtual_t"]) for e in store.events(trial_id=tid)]
    assert states == [(None, "proposed", 1.0), ("proposed", "approved", 2.0), ("approved", "dispatched", 3.0),
                      ("dispatched", "running", 4.0), ("running", "measured", 5.0)]
    proposal = store.proposal(tid)
    assert proposal is not None
    assert (proposal.planner, proposal.planner_version, proposal.seed) == ("gp", "2", 11)
    assert (proposal.data_hash, proposal.acquisition, proposal.acquisition_value) == ("abc", "qLogNEI", -1.25)
    assert proposal.provenance == provenance



def test_provenance_may_hold_numpy_and_infinite_numbers(store: CampaignStore) -> None:
    provenance = Provenance(planner="gp", seed=np.int64(5), acquisition_value=float("-inf"),
                            hyperparameters={"lengthscales": np.array([0.5]).tolist(), "noise": np.float32(0.25)})
    tid = store.add_trial({"anneal_temp": 80.0}, proposer="gp", origin="planner", provenance=provenance)
    stored = store.proposal(tid)
    assert stored is not None
    assert (stored.seed, stored.acquisition_value) == (5, float("-inf"))
    assert stored.provenance.hyperparameters == {"lengthscales": [0.5], "noise": 0.25}


def test_provenance_of_an_older_file_reads_with_defaults_and_keeps_unknown_fields() -> None:
    old = {"planner": "botorch", "version": "1", "seed": 3, "data_hash": "x", "kernel_note": "from a future field"}
    provenance = Provenance.from_dict(old)
    assert (provenance.planner_version, provenance.seed, provenance.design, provenance.notes) == ("1", 3, None, ())
    assert provenance.to_dict()["kernel_note"] == "from a future field"

def _trial_in_state(store: CampaignStore, state: str) -> int:
    """Reach `state` through the public API only."""
    if state in ("proposed", "approved", "rejected"):
        return store.add_trial({"anneal_temp": 100.0}, proposer="op", origin="manual", state=state)
    tid = dispatched_trial(store)
    if state == "running":
        store.transition(tid, "running")
    elif state == "measured":
        store.record_measurement(tid, ok({"y": 1.0}))
    elif state == "failed":
        store.record_measurement(tid, Measurement(status="failed_sample", detail="film dewetted"))
    elif state == "abandoned":
        store.transition(tid, "abandoned", detail="timeout")
    return tid


@pytest.mark.parametrize("from_state", STATES)
def test_every_forbidden_transition_is_refused_and_changes_nothing(tmp_path: Path, from_state: str) -> None:
    with new_store(tmp_path / "c.sqlite") as s:
        for to_state in STATES:
            tid = _trial_in_state(s, from_state)
            assert s.trial(tid).state == from_state
            n_events = len(s.events())
            allowed = to_state in TRANSITIONS[from_state] and to_state not in ("measured", "failed")
            if allowed:
                s.transition(tid, to_state)
                assert s.trial(tid).state == to_state
                assert len(s.events()) == n_events + 1
            else:
                with pytest.raises(InvalidTransition):
                    s.transition(tid, to_state)
                assert s.trial(tid).state == from_state
                assert len(s.events()) == n_events


def test_result_states_are_reached_only_with_a_measurement(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    with pytest.raises(InvalidTransition, match="record_measurement"):
        store.transition(tid, "measured")
    with pytest.raises(InvalidTransition, match="unknown trial state"):
        store.transition(tid, "done")


def test_add_trial_validates_its_input(store: CampaignStore) -> None:
    with pytest.raises(ValueError, match="origin 'robot'"):
        store.add_trial({"x": 1.0}, proposer="p", origin="robot")
    with pytest.raises(InvalidTransition, match="cannot start as 'measured'"):
        store.add_trial({"x": 1.0}, proposer="p", origin="manual", state="measured")
    with pytest.raises(ValueError, match="finite"):
        store.add_trial({"x": float("nan")}, proposer="p", origin="manual")
    with pytest.raises(ValueError, match="condition 'x'"):
        store.add_trial({"x": [1, 2]}, proposer="p", origin="manual")
    with pytest.raises(ValueError, match="retry_of"):
        store.add_trial({"x": 1.0}, proposer="p", origin="retry")
    with pytest.raises(UnknownTrial):
        store.add_trial({"x": 1.0}, proposer="p", origin="retry", retry_of=99)
    assert store.trials() == []
    # numpy scalars from a planner are stored as plain numbers
    tid = store.add_trial({"x": np.float64(0.25), "n": np.int64(3)}, proposer="p", origin="manual")
    assert store.trial(tid).conditions == {"x": 0.25, "n": 3}


def test_a_retry_is_a_new_trial_pointing_at_the_old_one(store: CampaignStore) -> None:
    first = dispatched_trial(store)
    store.transition(first, "abandoned", detail="fault: no reply to *IDN?")
    second = store.add_trial(store.trial(first).conditions, proposer="sobol", origin="retry", retry_of=first)
    third = store.add_trial(store.trial(first).conditions, proposer="sobol", origin="retry", retry_of=second)
    assert (store.trial(second).retry_of, store.trial(second).attempt) == (first, 2)
    assert store.trial(third).attempt == 3
    assert store.trial(first).detail == "fault: no reply to *IDN?"
    assert store.proposal(second) is None


def test_update_conditions_only_while_proposed_and_journals_old_and_new(store: CampaignStore) -> None:
    tid = store.add_trial({"anneal_temp": 190.0}, proposer="gp", origin="planner")
    store.update_conditions(tid, {"anneal_temp": 150.0}, detail="operator: too hot for PCBM", virtual_t=3.0)
    assert store.trial(tid).conditions == {"anneal_temp": 150.0}
    edit = store.events(trial_id=tid, kinds=["edit"])[0]
    assert edit["data"] == {"old": {"anneal_temp": 190.0}, "new": {"anneal_temp": 150.0}}
    assert (edit["detail"], edit["virtual_t"]) == ("operator: too hot for PCBM", 3.0)
    store.transition(tid, "approved")
    with pytest.raises(InvalidTransition, match="only while it is proposed"):
        store.update_conditions(tid, {"anneal_temp": 100.0}, detail="late")
    assert store.trial(tid).conditions == {"anneal_temp": 150.0}


def test_trials_filter_by_state_and_unknown_ids(store: CampaignStore) -> None:
    a = dispatched_trial(store)
    b = store.add_trial({"anneal_temp": 90.0}, proposer="op", origin="manual")
    store.record_measurement(a, ok({"y": 2.0}))
    assert [t.id for t in store.trials()] == [a, b]
    assert [t.id for t in store.trials(states=["proposed"])] == [b]
    assert [t.id for t in store.trials(states=("measured", "proposed"))] == [a, b]
    with pytest.raises(ValueError, match="unknown trial state"):
        store.trials(states=["done"])
    with pytest.raises(UnknownTrial, match="no trial 42") as info:
        store.trial(42)
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("no trial 42")


# ------------------------------------------------------------------------ measurements


def test_non_finite_values_make_a_failed_sample_naming_them(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    store.record_measurement(tid, ok({"tau_half": 3.0, "phi": float("nan"), "mu": float("-inf")}))
    trial = store.trial(tid)
    assert (trial.state, trial.measurement_status) == ("failed", "failed_sample")
    assert trial.values == {"tau_half": 3.0}
    assert "phi=nan" in trial.detail and "mu=-inf" in trial.detail
    assert table_rows(store.path, "SELECT name, value FROM measurements") == [("tau_half", 3.0)]
    assert store.events(trial_id=tid, limit=1)[0]["data"]["non_finite"] == {"phi": "nan", "mu": "-inf"}


def test_failed_samples_and_instrument_faults_end_where_the_lifecycle_says(store: CampaignStore) -> None:
    failed = dispatched_trial(store)
    store.record_measurement(failed, Measurement(status="failed_sample", detail="no signal above noise"))
    assert (store.trial(failed).state, store.trial(failed).detail) == ("failed", "no signal above noise")
    faulted = dispatched_trial(store)
    store.record_measurement(faulted, Measurement(status="instrument_fault", detail="laser interlock",
                                                  artifacts={"log": b"E-STOP\n"}))
    assert (store.trial(faulted).state, store.trial(faulted).measurement_status) == ("abandoned", "instrument_fault")
    assert store.artifacts(faulted) == {"log": b"E-STOP\n"}


def test_a_second_measurement_is_refused_and_changes_nothing(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    store.record_measurement(tid, ok({"y": 1.0}, artifacts={"trace": np.ones(3)}))
    n_events = len(store.events())
    with pytest.raises(AlreadyMeasured, match="already measured"):
        store.record_measurement(tid, ok({"y": 5.0}, artifacts={"trace": np.zeros(3)}))
    assert store.trial(tid).values == {"y": 1.0}
    assert np.array_equal(store.artifacts(tid)["trace"], np.ones(3))
    assert len(store.events()) == n_events
    assert len(table_rows(store.path, "SELECT * FROM measurements")) == 1


def test_a_measurement_needs_a_dispatched_or_running_trial(store: CampaignStore) -> None:
    tid = store.add_trial({"anneal_temp": 100.0}, proposer="op", origin="manual")
    with pytest.raises(InvalidTransition, match="dispatched or running"):
        store.record_measurement(tid, ok({"y": 1.0}))
    with pytest.raises(UnknownTrial):
        store.record_measurement(999, ok({"y": 1.0}))
    with pytest.raises(ValueError, match="not a number"):
        store.record_measurement(dispatched_trial(store), ok({"y": "1.0"}))  # type: ignore[dict-item]
    assert table_rows(store.path, "SELECT count(*) FROM measurements") == [(0,)]


def test_record_measurement_is_one_transaction(store: CampaignStore, monkeypatch: pytest.MonkeyPatch) -> None:
    tid = dispatched_trial(store)

    def fail_at_the_last_step(*args: object) -> None:
        raise RuntimeError("power cut between rows")

    # Fail after the values and artifacts are inserted, at the final state change.
    monkeypatch.setattr(store, "_transition", fail_at_the_last_step)
    with pytest.raises(RuntimeError, match="power cut"):
        store.record_measurement(tid, ok({"y": 1.0}, artifacts={"trace": np.arange(4.0)}))
    for table in ("measurements", "measurement_info", "artifacts"):
        assert table_rows(store.path, f"SELECT count(*) FROM {table}") == [(0,)]
    assert store.trial(tid).state == "dispatched"
    monkeypatch.undo()
    store.record_measurement(tid, ok({"y": 1.0}))
    assert store.trial(tid).state == "measured"


def test_a_batch_of_writes_is_kept_whole_or_not_at_all(store: CampaignStore) -> None:
    first, second = dispatched_trial(store), dispatched_trial(store)
    events = len(store.events())
    with pytest.raises(AlreadyMeasured), store.batch():
        store.record_measurement(first, ok({"y": 1.0}))
        store.record_measurement(second, ok({"y": 2.0}))
        store.record_measurement(first, ok({"y": 3.0}))  # the third write fails: the first two go too
    assert [store.trial(t).state for t in (first, second)] == ["dispatched", "dispatched"]
    assert table_rows(store.path, "SELECT count(*) FROM measurements") == [(0,)]
    assert len(store.events()) == events
    with store.batch():
        store.record_measurement(first, ok({"y": 1.0}))
        store.record_measurement(second, ok({"y": 2.0}))
    assert [store.trial(t).values for t in (first, second)] == [{"y": 1.0}, {"y": 2.0}]
    with CampaignStore.open(store.path) as reader, pytest.raises(ReadOnlyCampaign), reader.batch():
        pass


def test_reanalysis_supersedes_old_values_without_deleting_them(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    store.record_measurement(tid, ok({"tau_half": 10.0, "phi": 0.5}, artifacts={"trace": np.arange(3.0),
                                                                             "fit": {"k": 1}}))
    revised = Measurement(values={"tau_half": 11.0}, units={"tau_half": "ns"}, analysis="fit",
                          analysis_version="2", artifacts={"fit": {"k": 2}})
    store.add_reanalysis(tid, revised, virtual_t=50.0)
    trial = store.trial(tid)
    assert (trial.state, trial.values) == ("measured", {"tau_half": 11.0})
    rows = table_rows(store.path, "SELECT name, value, analysis_version, superseded FROM measurements ORDER BY id")
    assert rows == [("tau_half", 10.0, "1", 1), ("phi", 0.5, "1", 1), ("tau_half", 11.0, "2", 0)]
    artifacts = store.artifacts(tid)
    assert artifacts["fit"] == {"k": 2} and np.array_equal(artifacts["trace"], np.arange(3.0))
    event = store.events(kinds=["reanalysis"])[0]
    assert event["data"]["previous_analysis_version"] == "1" and event["data"]["analysis_version"] == "2"

    # A reanalysis that finds the sample bad turns the trial into a failed sample, journaled.
    store.add_reanalysis(tid, Measurement(values={"tau_half": float("inf")}, analysis="fit", analysis_version="3"))
    assert (store.trial(tid).state, store.trial(tid).values) == ("failed", {})
    assert store.events(limit=1)[0]["to_state"] == "failed"
    with pytest.raises(InvalidTransition, match="only measured or failed"):
        store.add_reanalysis(store.add_trial({"x": 1.0}, proposer="p", origin="manual"), revised)


# ------------------------------------------------------------------------ artifacts


def test_artifacts_round_trip_bit_for_bit(store: CampaignStore) -> None:
    weird = np.array([np.nan, -0.0, np.inf, 5e-324, 0.1 + 0.2], dtype=np.float64)
    weird.view(np.uint64)[0] = 0x7FF8_0000_DEAD_BEEF  # a NaN with a payload
    arrays = {
        "weird": weird,
        "big_endian": np.arange(24, dtype=">i2").reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)),
        "flags": np.array([True, False, True]),
        "labels": np.array(["a", "bcd"]),
        "complex": np.array([1 + 2j, np.nan * 1j]),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4)),
        "records": np.array([(1, 2.5)], dtype=[("n", "<i4"), ("t", "<f8")]),
    }
    other = {"settings": {"averages": 64, "wavelength_nm": 500.0, "ok": True, "nan": float("nan")},
             "raw": b"\x00\x01binary\xff"}
    tid = dispatched_trial(store)
    store.record_measurement(tid, ok({"y": 1.0}, artifacts={**arrays, **other}))
    back = store.artifacts(tid)
    assert list(back) == list(arrays) + list(other)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype, name
        assert back[name].shape == array.shape, name
        assert back[name].tobytes(order="A") == array.tobytes(order="A"), name
    assert back["weird"].view(np.uint64)[0] == 0x7FF8_0000_DEAD_BEEF
    assert np.isnan(back["settings"].pop("nan")) and back["settings"] == {"averages": 64, "wavelength_nm": 500.0,
                                                                          "ok": True}
    assert back["raw"] == other["raw"]
    shapes = dict(table_rows(store.path, "SELECT name, shape FROM artifacts WHERE kind = 'ndarray'"))
    assert json.loads(shapes["big_endian"]) == [2, 3, 4]


def test_artifacts_that_cannot_be_stored_losslessly_are_refused_by_name(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    with pytest.raises(ValueError, match="artifact 'objs'"):
        store.record_measurement(tid, ok({"y": 1.0}, artifacts={"objs": np.array([{"a": 1}], dtype=object)}))
    with pytest.raises(ValueError, match="artifact 'thing'"):
        store.record_measurement(tid, ok({"y": 1.0}, artifacts={"thing": object()}))
    assert store.trial(tid).state == "dispatched"


def test_large_arrays_live_next_to_the_campaign_and_are_verified(store: CampaignStore) -> None:
    store.inline_limit = 1024  # stand-in for 32 MB
    big = np.random.default_rng(0).normal(size=2000)
    tid = dispatched_trial(store)
    store.record_measurement(tid, ok({"y": 1.0}, artifacts={"transient": big, "small": np.arange(3)}))
    folder = store.path.with_name("run.sqlite.artifacts")
    (external,) = folder.iterdir()
    assert table_rows(store.path, "SELECT data IS NULL, path FROM artifacts WHERE name = 'transient'") == [
        (1, f"run.sqlite.artifacts/{external.name}")
    ]
    assert hashlib.sha256(external.read_bytes()).hexdigest() == external.stem
    assert np.array_equal(store.artifacts(tid)["transient"], big)
    assert store.check_integrity() == []

    external.write_bytes(external.read_bytes()[:-8] + b"tampered")
    with pytest.raises(CampaignFileError, match="does not match its recorded sha256"):
        store.artifacts(tid)
    external.unlink()
    with pytest.raises(CampaignFileError, match="copy the folder run.sqlite.artifacts"):
        store.artifacts(tid)
    assert any("missing" in problem for problem in store.check_integrity())


# ------------------------------------------------------------------------ journal, commands, readers


def test_commands_and_events_are_journaled_in_order(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    store.record_command(tid, "trmc-1", "tx", "SOUR:TEMP 120.0", virtual_t=10.0)
    store.record_command(tid, "trmc-1", "rx", "0,OK", virtual_t=10.5)
    store.record_command(None, "trmc-1", "tx", "*IDN?")
    assert [(c["direction"], c["text"], c["virtual_t"]) for c in store.commands(tid)] == [
        ("tx", "SOUR:TEMP 120.0", 10.0), ("rx", "0,OK", 10.5)]
    assert [c["text"] for c in store.commands()] == ["SOUR:TEMP 120.0", "0,OK", "*IDN?"]
    with pytest.raises(ValueError, match="'tx'"):
        store.record_command(tid, "trmc-1", "out", "x")
    with pytest.raises(UnknownTrial):
        store.record_command(77, "trmc-1", "tx", "x")

    store.record_event("safety_refusal", trial_id=tid, detail="anneal_temp above 250", data={"limit": 250})
    store.record_event("note", detail="glovebox O2 at 0.3 ppm")
    with pytest.raises(ValueError, match="transition"):
        store.record_event("state", trial_id=tid)
    kinds = [e["kind"] for e in store.events()]
    assert kinds == ["created", "state", "state", "state", "safety_refusal", "note"]
    assert store.events(kinds=["safety_refusal"])[0]["data"] == {"limit": 250}
    assert [e["kind"] for e in store.events(limit=2)] == ["safety_refusal", "note"]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn = sqlite3.connect(store.path)
        try:
            conn.execute("DELETE FROM events")
        finally:
            conn.close()


def test_readers_see_committed_writes_and_cannot_write(store: CampaignStore) -> None:
    with CampaignStore.open(store.path) as reader:
        assert reader.trials() == []
        tid = dispatched_trial(store)
        assert [t.state for t in reader.trials()] == ["dispatched"]
        assert not reader.writable and store.writable
        with pytest.raises(ReadOnlyCampaign, match="writer=True"):
            reader.transition(tid, "running")
        with pytest.raises(ReadOnlyCampaign):
            reader.record_event("note")
    assert store.trial(tid).state == "dispatched"


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = new_store(tmp_path / "c.sqlite")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.trials()


def test_concurrent_threads_share_one_writer(store: CampaignStore) -> None:
    tid = dispatched_trial(store)

    def chatter(station: str) -> None:
        for i in range(25):
            store.record_command(tid, station, "tx", f"{station} {i}")

    threads = [threading.Thread(target=chatter, args=(f"s{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = [c["text"] for c in store.commands(tid)]
    assert len(texts) == 100
    for n in range(4):  # each station's lines stay in its own order
        assert [t for t in texts if t.startswith(f"s{n} ")] == [f"s{n} {i}" for i in range(25)]


def test_values_outside_float_range_cannot_enter_the_measurements_table(store: CampaignStore) -> None:
    tid = dispatched_trial(store)
    conn = sqlite3.connect(store.path)
    try:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO measurements (trial_id, name, value, status, created_at) VALUES (?, 'y', ?, 'ok', 0)",
                    [tid, bad],
                )
    finally:
        conn.close()



@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.one_of(hnp.floating_dtypes(endianness="="), hnp.integer_dtypes(endianness="<"),
                        hnp.complex_number_dtypes(), hnp.boolean_dtypes(), hnp.datetime64_dtypes()),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    )
)
def test_any_numeric_array_encodes_losslessly(array: np.ndarray) -> None:
    encoded = encode_artifact("a", array)
    back = decode_artifact(encoded.kind, encoded.payload)
    assert (back.dtype, back.shape) == (array.dtype, array.shape)
    assert back.tobytes() == array.tobytes()
    assert encoded.sha256 == hashlib.sha256(encoded.payload).hexdigest()
