"""Tidy export: one row per trial, exact floats, and a sidecar that says what every column is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.export import export_campaign
from closedloop.drivers.base import Measurement
from closedloop.planners.provenance import Provenance
from tests.controller.store.test_store import PROTOCOL, new_store

# Values whose decimal form is long or extreme: a lossy writer or reader changes their last bits.
# (-0.0 is not among them: SQLite's REAL column stores it as 0.0; raw arrays keep it, as artifacts.)
TRICKY = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308, 123456789.12345679, 1e23]


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[CampaignStore]:
    """A small campaign with every kind of trial ending: measured, failed, abandoned + retry, rejected."""
    with new_store(tmp_path / "run.sqlite") as store:
        for i, y in enumerate(TRICKY):
            tid = store.add_trial(
                {"anneal_temp": 60.0 + i / 7, "solvent": "chloroform", "spin_speed": 1000 + 100 * i},
                proposer="gp",
                origin="planner",
                provenance=Provenance(planner="gp", planner_version="1", acquisition_value=-1.0 / (i + 3)),
                virtual_t=10.0 * i,
            )
            store.transition(tid, "approved", virtual_t=10.0 * i + 1)
            store.transition(tid, "dispatched", instrument="trmc-1", virtual_t=10.0 * i + 2)
            store.record_measurement(
                tid,
                Measurement(values={"phi": y, "tau_half": float(i) / 3}, units={"phi": "cm^2/(V*s)", "tau_half": "ns"}),
                virtual_t=10.0 * i + 8,
            )
        failed = _dispatched(store, 150.0)
        store.record_measurement(failed, Measurement(status="failed_sample", detail="film dewetted"))
        faulted = _dispatched(store, 160.0)
        store.transition(faulted, "abandoned", detail="fault: timeout")
        store.add_trial(store.trial(faulted).conditions, proposer="gp", origin="retry", retry_of=faulted)
        store.add_trial({"anneal_temp": 400.0, "solvent": "toluene", "spin_speed": 900}, proposer="gp",
                        origin="planner", state="rejected")
        yield store


def _dispatched(store: CampaignStore, temp: float) -> int:
    tid = store.add_trial({"anneal_temp": temp, "solvent": "toluene", "spin_speed": 2000}, proposer="gp",
                          origin="planner")
    store.transition(tid, "approved")
    store.transition(tid, "dispatched", instrument="trmc-2")
    return tid


def test_csv_export_reimports_with_pandas_to_the_same_values(campaign: CampaignStore, tmp_path: Path) -> None:
    data, sidecar = export_campaign(campaign, tmp_path / "out.csv")
    assert (data, sidecar) == (tmp_path / "out.csv", tmp_path / "out.csv.json")
    table = pd.read_csv(data)
    trials = campaign.trials()
    assert list(table["trial_id"]) == [t.id for t in trials]
    measured = table[table["state"] == "measured"]
    phi = measured["phi"].to_numpy()
    assert phi.view(np.uint64).tolist() == np.array(TRICKY).view(np.uint64).tolist()  # bit for bit
    for t, row in zip(trials, table.to_dict("records"), strict=True):
        assert row["anneal_temp"] == t.conditions["anneal_temp"]
        assert row["solvent"] == t.conditions["solvent"]
        assert row["spin_speed"] == t.conditions["spin_speed"]
        assert (row["state"], row["origin"], row["proposer"]) == (t.state, t.origin, t.proposer)
        assert row["created_at"] == t.created_at and row["updated_at"] == t.updated_at
        if t.state == "measured":
            assert row["tau_half"] == t.values["tau_half"]
            assert row["measurement_status"] == "ok"
            proposal = campaign.proposal(t.id)
            assert proposal is not None and row["acquisition_value"] == proposal.acquisition_value
    assert table["spin_speed"].dtype == np.int64


def test_export_rows_carry_status_retries_and_milestones(campaign: CampaignStore, tmp_path: Path) -> None:
    data, _ = export_campaign(campaign, tmp_path / "out.csv")
    rows = pd.read_csv(data).set_index("trial_id")
    ids = {state: campaign.trials(states=[state])[0].id for state in ("failed", "abandoned", "proposed")}
    failed, faulted, retry = rows.loc[ids["failed"]], rows.loc[ids["abandoned"]], rows.loc[ids["proposed"]]
    assert (failed["state"], failed["measurement_status"], failed["detail"]) == ("failed", "failed_sample",
                                                                                 "film dewetted")
    assert np.isnan(failed["phi"])
    assert (faulted["state"], faulted["detail"]) == ("abandoned", "fault: timeout")
    assert (retry["origin"], retry["retry_of"], retry["attempt"]) == ("retry", ids["abandoned"], 2)
    assert pd.isna(retry["dispatched_at"]) and pd.isna(retry["finished_at"])
    first = rows.loc[1]
    events = {e["to_state"]: e for e in campaign.events(trial_id=1)}
    assert first["dispatched_at"] == events["dispatched"]["t"]
    assert first["finished_at"] == events["measured"]["t"]
    assert (first["dispatched_virtual_t"], first["finished_virtual_t"]) == (2.0, 8.0)
    text = data.read_text()
    assert f"\n{ids['proposed']},proposed,retry,gp,2,{ids['abandoned']}," in text  # ids stay integers in the file


def test_sidecar_names_protocol_versions_roles_and_units(campaign: CampaignStore, tmp_path: Path) -> None:
    _, sidecar = export_campaign(campaign, tmp_path / "out.csv")
    document = json.loads(sidecar.read_text())
    assert document["protocol"]["text"] == PROTOCOL
    assert document["protocol"]["sha256"] == hashlib.sha256(PROTOCOL.encode()).hexdigest()
    assert document["software_versions"] == campaign.campaign()["versions"]
    assert document["rows"] == len(campaign.trials())
    columns = document["columns"]
    assert columns["anneal_temp"] == {"role": "process_condition", "unit": "degC", "name": "anneal_temp"}
    assert columns["solvent"]["role"] == "process_condition"
    assert columns["phi"] == {"role": "measured_property", "unit": "cm^2/(V*s)", "name": "phi"}
    assert columns["tau_half"]["unit"] == "ns"
    assert columns["state"]["role"] == columns["dispatched_at"]["role"] == "metadata"
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header == list(columns)  # every column described, in file order


def test_parquet_export_keeps_types_and_values(campaign: CampaignStore, tmp_path: Path) -> None:
    csv_path, _ = export_campaign(campaign, tmp_path / "out.csv")
    parquet_path, sidecar = export_campaign(campaign, tmp_path / "out.parquet", condition_units={"anneal_temp": "K"})
    from_parquet = pd.read_parquet(parquet_path)
    from_csv = pd.read_csv(csv_path)
    assert list(from_parquet.columns) == list(from_csv.columns)
    assert from_parquet["phi"].dropna().to_numpy().view(np.uint64).tolist() == \
        np.array(TRICKY).view(np.uint64).tolist()
    assert str(from_parquet["retry_of"].dtype) == "Int64"
    assert from_parquet["solvent"].tolist() == from_csv["solvent"].tolist()
    assert json.loads(sidecar.read_text())["columns"]["anneal_temp"]["unit"] == "K"  # caller's units win


def test_export_works_from_a_reader_while_the_writer_is_open(campaign: CampaignStore, tmp_path: Path) -> None:
    with CampaignStore.open(campaign.path) as reader:
        data, _ = export_campaign(reader, tmp_path / "live.csv")
    assert len(pd.read_csv(data)) == len(campaign.trials())


def test_a_parameter_named_like_a_metadata_column_is_prefixed(tmp_path: Path) -> None:
    with new_store(tmp_path / "c.sqlite") as store:
        store.add_trial({"state": 1.5, "detail": "fine"}, proposer="op", origin="manual")
        data, sidecar = export_campaign(store, tmp_path / "c.csv")
    table = pd.read_csv(data)
    assert table.loc[0, "state"] == "proposed" and table.loc[0, "condition:state"] == 1.5
    assert table.loc[0, "condition:detail"] == "fine"
    assert json.loads(sidecar.read_text())["columns"]["condition:state"]["name"] == "state"


def test_an_unknown_export_format_is_refused(campaign: CampaignStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        export_campaign(campaign, tmp_path / "out.xlsx")
    data, _ = export_campaign(campaign, tmp_path / "out.txt", format="csv")
    assert pd.read_csv(data)["trial_id"].tolist() == [t.id for t in campaign.trials()]
    assert not list(tmp_path.glob(".*partial"))
