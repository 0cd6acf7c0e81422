"""`tell --csv`: a results file from a spreadsheet is recorded whole, or refused with file:line and
nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from tests.controller.cli.campaigns import invoke, refused, stored


def results(tmp_path: Path, content: bytes | str, name: str = "results.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_a_file_excel_saved_as_csv_utf8_is_recorded_whole(handed_out: Path, tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF; a blank row is ignored.
    csv = results(tmp_path, "\ufefftrial,phi_sum_mu_max,tau_half,status\r\n1,2.1e-3,180 ns,\r\n"
                            "2,1.5e-3 cm^2/(V*s),0.2 us,ok\r\n\r\n3,,,FAILED\r\n")
    done = invoke("tell", handed_out, "--csv", csv)
    assert done.exit_code == 0, done.output
    assert "recorded 3 result(s)" in done.stdout
    with Campaign.open(handed_out) as c:
        assert [(t.id, t.state, t.values) for t in c.store.trials()] == [
            (1, "measured", {"phi_sum_mu_max": 2.1e-3, "tau_half": 180.0}),
            (2, "measured", {"phi_sum_mu_max": 1.5e-3, "tau_half": 200.0}),
            (3, "failed", {}),
        ]


def test_a_file_that_is_not_utf8_is_refused_naming_the_line_and_byte(handed_out: Path, tmp_path: Path) -> None:
    before = stored(handed_out)
    latin1 = results(tmp_path, "trial,phi_sum_mu_max,tau_half\n1,2e-3,180 ns\n2,2e-3,0.2 µs\n".encode("latin-1"))
    refused(invoke("tell", handed_out, "--csv", latin1), f"{latin1}:3:", "byte 0xb5", "not UTF-8", "CSV UTF-8")
    assert stored(handed_out) == before


@pytest.mark.parametrize(("content", "phrases"), [
    ("", [": the file is empty", "trial,phi_sum_mu_max,tau_half"]),
    ("\n\n", [": the file is empty"]),
    ("trial,phi_sum_mu_max,tau_half\n", [": no results under the header"]),
    ("phi_sum_mu_max,tau_half\n2e-3,180\n", [":1: no `trial` column"]),
    ("trial,phi_sum_mu_max,colour\n1,2e-3,red\n", [":1: column 'colour' is not a measured quantity",
                                                   "trial, phi_sum_mu_max, tau_half, status"]),
    ("trial,tau_half\n1,180\n", [":1: no column phi_sum_mu_max (an objective"]),
    ("trial,phi_sum_mu_max,phi_sum_mu_max\n1,2e-3,3e-3\n", [":1: column 'phi_sum_mu_max' appears twice"]),
    ("trial,,tau_half\n1,2e-3,180\n", [":1: column 2 has no name"]),
    ("trial,phi_sum_mu_max,tau_half\n1,2e-3,180\n2,2e-3\n", [":3: 2 cells in a row of 3 columns"]),
    ("trial,phi_sum_mu_max,tau_half\n1,2e-3,180,7\n", [":2: 4 cells in a row of 3 columns"]),
    ("trial,phi_sum_mu_max\n1,2e-3\nthree,2e-3\n", [":3: trial 'three': not a trial number"]),
    ("trial,phi_sum_mu_max\n1,2e-3\n1,3e-3\n", [":3: trial 1 again (first on line 2)"]),
    ("trial,phi_sum_mu_max,status\n1,2e-3,\n2,,broken\n", [":3: status 'broken'", "`failed`"]),
    ('trial,phi_sum_mu_max\n1,"2e-3\n', [":2: not readable as CSV"]),
])
def test_a_malformed_results_file_is_refused_with_file_and_line(
    handed_out: Path, tmp_path: Path, content: str, phrases: list[str]
) -> None:
    before = stored(handed_out)
    csv = results(tmp_path, content)
    line = refused(invoke("tell", handed_out, "--csv", csv), *phrases)
    assert line.startswith(f"error: {csv}")
    assert stored(handed_out) == before


@pytest.mark.parametrize(("bad_row", "phrases"), [
    ("3,nan,180", [":4: trial 3: phi_sum_mu_max='nan': not a finite number", "status `failed`"]),
    ("3,-1e-3,180", [":4: trial 3: phi_sum_mu_max='-1e-3'", "log scale"]),
    ("3,2e-3,3 kg", [":4: trial 3: tau_half='3 kg'"]),
    ("9,2e-3,180", [":4: trial 9: no such trial"]),
])
def test_one_bad_row_records_no_row_of_the_file(
    handed_out: Path, tmp_path: Path, bad_row: str, phrases: list[str]
) -> None:
    before = stored(handed_out)
    csv = results(tmp_path, f"trial,phi_sum_mu_max,tau_half\n1,2e-3,180\n2,2.5e-3,150\n{bad_row}\n")
    refused(invoke("tell", handed_out, "--csv", csv), *phrases, "none of its 3 rows was recorded")
    assert stored(handed_out) == before


def test_csv_and_values_on_the_command_line_exclude_each_other(handed_out: Path, tmp_path: Path) -> None:
    csv = results(tmp_path, "trial,phi_sum_mu_max\n1,2e-3\n")
    refused(invoke("tell", handed_out, "--csv", csv, "--trial", 2, "phi_sum_mu_max=1e-3"), "--csv", "drop --trial")
    assert stored(handed_out)[0][1][1] == "dispatched"


def test_the_python_api_reads_the_same_files(handed_out: Path, tmp_path: Path) -> None:
    csv = results(tmp_path, "trial,phi_sum_mu_max\n2,2e-3\n3,3e-3\n")
    with Campaign.open(handed_out, writer=True) as c:
        assert c.tell_csv(csv) == 2
        assert [t.state for t in c.store.trials()] == ["dispatched", "measured", "measured"]
