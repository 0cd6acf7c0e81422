"""The Python API a notebook uses (issue 20): a protocol as a dict, ask/tell, to_pandas, report, run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import closedloop
from closedloop.controller.protocol.model import ProtocolError
from tests import paths

TRMC = paths.PROTOCOLS / "trmc_opv_blend.yaml"


def as_dict(path: Path) -> dict:
    """A protocol file's sections as plain Python dicts and lists, as a notebook would write them."""
    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(YAML(typ="safe").load(path.read_text()))  # type: ignore[return-value]


def test_a_protocol_written_as_a_dict_makes_the_same_campaign_as_its_file(tmp_path: Path) -> None:
    with closedloop.Campaign.create(as_dict(TRMC), tmp_path / "d.sqlite") as from_dict, \
            closedloop.Campaign.create(TRMC, tmp_path / "f.sqlite") as from_file:
        assert from_dict.ask(2) == from_file.ask(2)  # same space, seed and design
        assert from_dict.store.campaign()["protocol_path"] == "protocol (a Python dict)"
    with closedloop.Campaign.open(tmp_path / "d.sqlite") as reopened:  # the stored YAML text reads back
        assert reopened.protocol.space.keys() == as_dict(TRMC)["space"].keys()


def test_a_bad_dict_is_refused_naming_the_field_not_a_line(tmp_path: Path) -> None:
    data = as_dict(TRMC)
    data["space"]["anneal_temp"]["high"] = 900  # beyond the station's envelope
    with pytest.raises(ProtocolError) as refused:
        closedloop.Campaign.create(data, tmp_path / "c.sqlite")
    message = str(refused.value)
    assert message.startswith("protocol (a Python dict): space.anneal_temp.high: ") and ":1:" not in message
    assert not (tmp_path / "c.sqlite").exists()
    with pytest.raises(ProtocolError, match="expected a dict of sections"):
        closedloop.Campaign.create(["not", "a", "dict"], tmp_path / "c.sqlite")  # type: ignore[arg-type]


def test_to_pandas_has_the_columns_and_units_of_export(tmp_path: Path) -> None:
    with closedloop.Campaign.create(TRMC, tmp_path / "c.sqlite") as c:
        [(first, _), _] = c.ask(2)
        c.tell(first, {"phi_sum_mu_max": "2.1e-3 cm^2/(V*s)", "tau_half": "0.18 us"})
        frame = c.to_pandas()
        exported, _ = c.store.path, None
    from closedloop.controller.store.export import export_campaign

    with closedloop.Campaign.open(tmp_path / "c.sqlite") as c:
        table, _ = export_campaign(c.store, tmp_path / "out.csv")
    with table.open() as f:
        header = next(csv.reader(f))
    assert list(frame.columns) == header
    assert len(frame) == 2 and frame.loc[0, "tau_half"] == pytest.approx(180.0)  # stored in ns
    assert frame.attrs["units"]["tau_half"] == "ns" and frame.attrs["units"]["anneal_temp"] == "degC"
    assert exported == tmp_path / "c.sqlite"


def test_report_and_run_from_python(branin_protocol, tmp_path: Path) -> None:
    with closedloop.Campaign.create(branin_protocol(trials=6, n_init=5), tmp_path / "c.sqlite") as c:
        halt = c.run(sim=True)
        written = c.report(tmp_path / "r.html")
        status = c.status()
    assert not halt.paused and status["results"] == 6
    assert written == tmp_path / "r.html" and written.read_text().lstrip().startswith("<!DOCTYPE html>")
