"""`closedloop import`: earlier results (a CSV file, a literature table, another campaign) as warm-start
trials, checked against the space, recorded whole or not at all, and used by the next proposal."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest

from closedloop.controller.campaign import BadInput, Campaign
from closedloop.controller.warm_start import warm_start_records
from closedloop.simulators.testfunctions import branin
from tests import paths
from tests.controller.cli.campaigns import TRMC, invoke, refused, stored

POOL = paths.PROTOCOLS / "pool_melting_points.yaml"
MELTING_POINTS = paths.PROTOCOLS / "data" / "melting_points.csv"  # Seko et al. 2014, see its PROVENANCE.md

# An earlier screen written by hand: a header unit (K), cells with their own units, a choice spelled with
# a capital, a failed film, a film annealed hotter than the space allows, and a column of sample names.
EARLIER = (
    "sample,acceptor_fraction,anneal_temp [K],anneal_time,spin_speed,solvent,phi_sum_mu_max,tau_half,status\n"
    "A1,0.5,423.15,10 min,1500,Chlorobenzene,2.1e-3,180 ns,\n"
    "A2,0.3,393.15,0.5 h,2000,chloroform,1.1e-3,,\n"
    "A3,0.6,500,20,1550,o-dichlorobenzene,,,failed\n"
)


def write(tmp_path: Path, content: str | bytes, name: str = "earlier.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture
def opv(tmp_path: Path) -> Path:
    db = tmp_path / "opv.sqlite"
    Campaign.create(TRMC, db).close()
    return db


def test_a_csv_is_imported_with_units_converted_choices_matched_and_provenance(opv: Path, tmp_path: Path) -> None:
    csv = write(tmp_path, EARLIER)
    done = invoke("import", opv, "--csv", csv, "--note", "our 2023 films")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        f"imported 3 earlier result(s) from earlier.csv (sha256 {hashlib.sha256(csv.read_bytes()).hexdigest()[:12]}) "
        "as warm-start trials 1-3: 2 measured, 1 failed",
        "  1 outside the search space, kept and flagged (see the report):",
        "    earlier.csv:4: anneal_temp=226.85 degC is outside [60, 200]; spin_speed=1550 rpm is not on its grid "
        "(600, 700, ...); breaks the constraint 'anneal_temp + 2 * anneal_time <= 220'",
        "  ignored columns: sample",
        "the planner uses them from the next proposal; they do not count against the budget of 40 trials",
    ]
    with Campaign.open(opv) as c:
        trials = c.store.trials()
        records = warm_start_records(c.store)
        status = c.status()
    assert [(t.origin, t.state, t.proposer) for t in trials] == [("warm_start", "measured", "import")] * 2 + [
        ("warm_start", "failed", "import")]
    first = trials[0]
    assert first.conditions == {"acceptor_fraction": 0.5, "anneal_temp": pytest.approx(150.0), "anneal_time": 10.0,
                                "spin_speed": 1500, "solvent": "chlorobenzene"}
    assert first.values == {"phi_sum_mu_max": 2.1e-3, "tau_half": 180.0}
    assert trials[1].conditions["anneal_time"] == 30.0 and trials[1].conditions["solvent"] == "chloroform"
    assert first.detail == "imported from earlier.csv:2; our 2023 films"
    assert records[1]["source"] == str(csv.resolve()) and records[1]["line"] == 2
    assert records[1]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert records[1]["note"] == "our 2023 films" and records[1]["imported_at"].startswith("20")
    assert records[1]["outside_space"] == [] and len(records[3]["outside_space"]) == 3
    assert status["results"] == 0 and status["warm_start"] == 3  # not counted against the budget
    shown = invoke("status", opv)
    assert "results: 0 of 40 (+3 earlier, imported as warm start)" in shown.stdout


def test_the_same_csv_twice_is_refused_and_nothing_changes(opv: Path, tmp_path: Path) -> None:
    csv = write(tmp_path, EARLIER)
    assert invoke("import", opv, "--csv", csv).exit_code == 0
    before = stored(opv)
    copy = write(tmp_path, EARLIER, "renamed.csv")  # the same content under another name is the same data
    refused(invoke("import", opv, "--csv", copy), "renamed.csv", "was imported already on", "as trials 1-3",
            "nothing changed")
    assert stored(opv) == before


@pytest.mark.parametrize(("content", "phrases"), [
    ("", [": the file is empty", "acceptor_fraction, anneal_temp"]),
    ("acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,phi_sum_mu_max\n", [": no rows under the header"]),
    ("acceptor_fraction,anneal_temp,anneal_time,solvent,phi_sum_mu_max\n0.5,150,10,chloroform,2e-3\n",
     [":1: no column for parameter spin_speed"]),
    ("acceptor_fraction,anneal_temp [ns],anneal_time,spin_speed,solvent,phi_sum_mu_max\n0.5,150,10,900,chloroform,2e-3\n",
     [":1:2: anneal_temp [ns]", "different dimensions", "unit of anneal_temp is degC"]),
    ("acceptor_fraction,anneal_temp,anneal_temp [K],anneal_time,spin_speed,solvent,phi_sum_mu_max\n",
     [":1:3: column 'anneal_temp [K]' gives anneal_temp, like column 2"]),
    ("acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,tau_half\n0.5,150,10,900,chloroform,120\n",
     [":1: no column phi_sum_mu_max (an objective"]),
])
def test_a_malformed_file_is_refused_naming_file_and_line(
    opv: Path, tmp_path: Path, content: str, phrases: list[str]
) -> None:
    before = stored(opv)
    csv = write(tmp_path, content)
    line = refused(invoke("import", opv, "--csv", csv), *phrases)
    assert line.startswith(f"error: {csv}")
    assert stored(opv) == before


GOOD_ROW = "0.5,150,10,900,chloroform,2e-3,"


@pytest.mark.parametrize(("bad_row", "phrases"), [
    ("0.5,150,10,900,toluene,2e-3,", [":3:5: solvent: 'toluene' is not one of chlorobenzene, o-dichlorobenzene, "
                                      "chloroform", "leave that row out"]),
    ("0.5,hot,10,900,chloroform,2e-3,", [":3:2: anneal_temp:", "'hot'"]),
    (",150,10,900,chloroform,2e-3,", [":3:1: no value for parameter acceptor_fraction"]),
    ("0.5,150,10,900,chloroform,nan,", [":3:6: phi_sum_mu_max='nan': not a finite number", "status `failed`"]),
    ("0.5,150,10,900,chloroform,-1e-3,", [":3:6: phi_sum_mu_max='-1e-3'", "log scale", "> 0"]),
    ("0.5,150,10,900,chloroform,2e-3 kg,", [":3:6: phi_sum_mu_max='2e-3 kg'", "different dimensions"]),
    ("0.5,150,10,900,chloroform,2e-3,failed", [":3:6: a failed row (status `failed`) is recorded without values"]),
    ("0.5,150,10,900,chloroform,,", [":3:6: no value of phi_sum_mu_max (an objective)", "`failed`"]),
    ("0.5,150,10,900,chloroform,2e-3,broken", [":3:7: status 'broken'"]),
    ("0.5,150,10,900,chloroform", [":3: 5 cells in a row of 7 columns"]),
])
def test_one_bad_row_imports_no_row_of_the_file(opv: Path, tmp_path: Path, bad_row: str, phrases: list[str]) -> None:
    before = stored(opv)
    csv = write(tmp_path, "acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,phi_sum_mu_max,status\n"
                          f"{GOOD_ROW}\n{bad_row}\n")
    refused(invoke("import", opv, "--csv", csv), f"{csv}:3", *phrases)
    assert stored(opv) == before


def test_a_file_that_is_not_utf8_is_refused_as_tell_refuses_it(opv: Path, tmp_path: Path) -> None:
    csv = write(tmp_path, "acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,phi_sum_mu_max\n"
                          "0.5,150 °C,10,900,chloroform,2e-3\n".encode("latin-1"))
    refused(invoke("import", opv, "--csv", csv), f"{csv}:2:", "byte 0xb0", "not UTF-8")
    assert stored(opv)[0] == []


def test_exactly_one_source_is_given(opv: Path, tmp_path: Path) -> None:
    refused(invoke("import", opv), "--csv FILE or --from CAMPAIGN_FILE")
    csv = write(tmp_path, EARLIER)
    refused(invoke("import", opv, "--csv", csv, "--from", opv), "one of them")
    refused(invoke("import", opv, "--from", opv), "this campaign's own file")
    refused(invoke("import", opv, "--from", tmp_path / "missing.sqlite"), "missing.sqlite", "no campaign file")


# ---- the planner uses them ------------------------------------------------------------------------------


def test_a_literature_table_makes_the_next_proposal_model_based(tmp_path: Path) -> None:
    """The real melting-point table (Seko et al.), 20 compounds, into the pool campaign: 20 >= its
    initial.n of 12, so the very first proposal is the model's, fitted on those 20, and is none of them."""
    table = pd.read_csv(MELTING_POINTS)
    earlier = write(tmp_path, "".join(MELTING_POINTS.read_text().splitlines(keepends=True)[:21]), "seko.csv")
    with Campaign.create(POOL, tmp_path / "pool.sqlite") as c:
        done = c.import_csv(earlier, note="Seko et al. 2014, first 20 compounds")
        assert len(done.trials) == 20 and done.outside == 0
        # compound, elem_A, ... are not parameters of this campaign: ignored and listed, not refused.
        assert "compound" in done.source.ignored and "Tm_K" not in done.source.ignored
        [(trial, conditions)] = c.ask(1)
        provenance = c.store.proposal(trial).provenance
    assert trial == 21
    assert provenance.design == "model" and provenance.n_observations == 20
    imported = table.iloc[:20]
    assert not ((imported["x_A"] == conditions["x_A"]) & (imported["Z_mean"] == conditions["Z_mean"])).any()


def test_warm_starts_count_towards_the_initial_design(branin_protocol, tmp_path: Path) -> None:  # noqa: ANN001
    """initial.n is 4; three earlier results leave one Sobol point to run before the model takes over."""
    earlier = write(tmp_path, "x1,x2,y\n" + "".join(
        f"{x1},{x2},{branin(x1, x2)}\n" for x1, x2 in [(-3.0, 12.0), (3.0, 3.0), (8.0, 8.0)]))
    with Campaign.create(branin_protocol(n_init=4, trials=6), tmp_path / "b.sqlite") as c:
        c.import_csv(earlier)
        [(first, point)] = c.ask(1)
        assert c.store.proposal(first).provenance.design == "initial"
        c.tell(first, {"y": branin(point["x1"], point["x2"])})
        [(second, _)] = c.ask(1)
        provenance = c.store.proposal(second).provenance
        assert provenance.design == "model" and provenance.n_observations == 4
        assert c.status()["results"] == 1


# ---- another campaign -------------------------------------------------------------------------------------


def _measure_by_hand(db: Path, n: int) -> None:
    with Campaign.open(db, writer=True) as c:
        for trial, point in c.ask(n):
            c.tell(trial, {"y": branin(point["x1"], point["x2"])})


def test_another_campaign_is_imported_once_and_then_only_its_new_results(branin_protocol, tmp_path: Path) -> None:  # noqa: ANN001
    source = tmp_path / "earlier.sqlite"
    Campaign.create(branin_protocol(trials=10, name="earlier.yaml"), source).close()
    _measure_by_hand(source, 3)
    target = tmp_path / "now.sqlite"
    Campaign.create(branin_protocol(trials=10), target).close()

    done = invoke("import", target, "--from", source)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("imported 3 earlier result(s) from earlier.sqlite")
    with Campaign.open(target) as c:
        records = warm_start_records(c.store)
        with Campaign.open(source) as s:
            assert [(t.conditions, t.values) for t in c.store.trials()] == [
                (t.conditions, t.values) for t in s.store.trials()]
    assert [records[i]["source_trial"] for i in (1, 2, 3)] == [1, 2, 3]
    assert records[1]["kind"] == "campaign" and records[1]["source"] == str(source.resolve())

    refused(invoke("import", target, "--from", source), "its 3 results were imported already", "nothing new")
    _measure_by_hand(source, 1)  # the earlier campaign went on
    again = invoke("import", target, "--from", source)
    assert again.exit_code == 0, again.output
    assert "imported 1 earlier result(s)" in again.stdout and "3 result(s) of it were imported before" in again.stdout
    assert [records["source_trial"] for records in warm_start_records(Campaign.open(target).store).values()] == [
        1, 2, 3, 4]


def test_a_campaign_in_other_units_is_converted(tmp_path: Path) -> None:
    """The same screen with anneal_temp in kelvin: the degC campaign's films arrive 273.15 K warmer."""
    source = tmp_path / "celsius.sqlite"
    with Campaign.create(TRMC, source) as c:
        [(trial, point)] = c.ask(1)
        c.tell(trial, {"phi_sum_mu_max": "2e-3", "tau_half": "0.15 us"})
    kelvin = tmp_path / "kelvin.yaml"
    kelvin.write_text(TRMC.read_text()
                      .replace("anneal_temp:       {type: float, low: 60, high: 200, unit: degC}",
                               "anneal_temp:       {type: float, low: 333.15, high: 473.15, unit: K}")
                      .replace('"anneal_temp + 2 * anneal_time <= 220"', '"anneal_temp + 2 * anneal_time <= 493.15"'))
    with Campaign.create(kelvin, tmp_path / "kelvin.sqlite") as c:
        done = c.import_campaign(source)
        [t] = c.store.trials()
    assert done.outside == 0
    assert t.conditions["anneal_temp"] == pytest.approx(point["anneal_temp"] + 273.15)
    assert t.values == {"phi_sum_mu_max": 2e-3, "tau_half": pytest.approx(150.0)}


def test_the_python_api_refuses_what_the_cli_refuses(opv: Path, tmp_path: Path) -> None:
    csv = write(tmp_path, "acceptor_fraction,anneal_temp,anneal_time,spin_speed,solvent,phi_sum_mu_max\n"
                          "0.5,150,10,900,chloroform,inf\n")
    with Campaign.open(opv, writer=True) as c, pytest.raises(BadInput, match=r"earlier.csv:2:6: .*not a finite"):
        c.import_csv(csv)
    assert stored(opv)[0] == []


def test_export_and_report_mark_the_imported_trials(opv: Path, tmp_path: Path) -> None:
    from closedloop.controller.report.html import build_report
    from closedloop.controller.store.export import export_campaign

    invoke("import", opv, "--csv", write(tmp_path, EARLIER))
    with Campaign.open(opv, writer=True) as c:
        [(trial, _)] = c.ask(1)
        c.tell(trial, {"phi_sum_mu_max": "1e-3"})
        table, _ = export_campaign(c.store, tmp_path / "opv.csv")
        html = build_report(c.store)
    exported = pd.read_csv(table)
    assert exported["origin"].tolist()[:3] == ["warm_start"] * 3 and exported["origin"].iloc[3] != "warm_start"
    assert exported["detail"].iloc[2].startswith("imported from earlier.csv:4; outside the space:")
    # A legend entry and a marker of their own (open where outside the space), in the plots' data.
    assert '"name":"warm start (imported)"' in html and '"symbol":"diamond"' in html
    assert '"name":"warm start (imported), outside the space"' in html and '"symbol":"diamond-open"' in html
    assert "warm_start (outside the space)" in html  # the trial table
    assert "earlier results imported (warm start)" in html  # the journal
    assert not math.isnan(exported["phi_sum_mu_max"].iloc[0])
