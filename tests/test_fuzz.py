"""Fuzz the commands users feed files to: `validate` with broken protocols, `tell --csv` and `import
--csv` with broken results files, `status` and `export` with broken campaign files (issue 19).

Every example must end with exit 0, 1 or 2 and never a traceback; a command that refuses its input
leaves the campaign file byte for byte as it was; each answer comes in seconds. The example counts are
bounded and the generation seeded (derandomize), so `make test` runs the same cases every time;
benchmarks/fuzz_inputs.py runs many more in real subprocesses and records time and memory.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from closedloop.controller.campaign import Campaign
from closedloop.controller.cli.main import main
from tests import fuzz, paths

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MAX_GROWTH_KB = 400_000  # the whole run's peak memory may not grow by more than this (ru_maxrss, KiB)


def invoke(args: list[str], campaign: Path | None = None) -> fuzz.Outcome:
    """Run one CLI command in this process, as `closedloop ARGS`, and record what it did."""
    before = fuzz.file_digest(campaign) if campaign is not None else ""
    started = time.monotonic()
    result = CliRunner().invoke(main, args)
    seconds = time.monotonic() - started
    error = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        error = "".join(traceback.format_exception(result.exception))[-1500:]
    changed = campaign is not None and fuzz.file_digest(campaign) != before
    return fuzz.Outcome(args[0], result.exit_code if not error else None, result.output, seconds, changed, error)


@pytest.fixture(scope="module")
def handed_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A TRMC campaign measured by hand: trials 1-3 handed out, trial 1 told, nothing planned by a GP."""
    db = tmp_path_factory.mktemp("fuzz") / "opv.sqlite"
    with Campaign.create(paths.PROTOCOLS / "trmc_opv_blend.yaml", db) as c:
        c.ask(3)
        c.tell(1, {"phi_sum_mu_max": "2.1e-3", "tau_half": "180 ns"})
    yield db


@pytest.fixture(scope="module", autouse=True)
def bounded_memory() -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < MAX_GROWTH_KB, f"fuzzing grew the process by {grown / 1024:.0f} MiB"


@FUZZ
@given(data=fuzz.protocol_bytes())
def test_validate_answers_every_broken_protocol_with_an_exit_code(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "protocol.yaml"
    path.write_bytes(data)
    outcome = invoke(["validate", str(path)])
    assert outcome.problems(max_seconds=10) == [], (data[:600], outcome.output[-600:])
    if outcome.exit_code == 2:
        assert str(path) in outcome.output  # the error names the file


def csv_into_a_campaign(command: str, template: Path, csv_path: Path, data: bytes) -> tuple[Path, fuzz.Outcome]:
    """`closedloop COMMAND COPY --csv CSV_PATH` (tell or import) on a copy of `template`, with `data` as
    the file: it keeps every promise, records (0) or refuses naming the file (2); returns the copy."""
    campaign = fuzz.broken_copy(template, [], csv_path.with_name("c.sqlite"))
    csv_path.write_bytes(data)
    outcome = invoke([command, str(campaign), "--csv", str(csv_path)], campaign)
    assert outcome.problems(may_change=True, max_seconds=10) == [], (data[:400], outcome.output[-600:])
    assert outcome.exit_code in (0, 2), outcome.output
    if outcome.exit_code == 2:
        assert csv_path.name in outcome.output
    return campaign, outcome


@FUZZ
@given(data=fuzz.results_csv_bytes())
def test_tell_csv_stores_all_rows_or_refuses_and_changes_nothing(handed_out: Path, tmp_path: Path, data: bytes) -> None:
    campaign, outcome = csv_into_a_campaign("tell", handed_out, tmp_path / "results.csv", data)
    if outcome.exit_code == 0:  # every row recorded: as many trials measured or failed as the file has rows
        recorded = outcome.output.split()[1]
        with Campaign.open(campaign) as c:
            told = [t for t in c.store.trials() if t.state in ("measured", "failed")]
        assert len(told) == 1 + int(recorded), (outcome.output, told)  # trial 1 was told before


@FUZZ
@given(data=fuzz.earlier_results_csv_bytes())
def test_import_stores_a_whole_file_or_refuses_it_and_changes_nothing(handed_out: Path, tmp_path: Path, data: bytes) -> None:
    campaign, outcome = csv_into_a_campaign("import", handed_out, tmp_path / "earlier.csv", data)
    if outcome.exit_code == 0:
        rows = len(data.decode("utf-8-sig").strip().splitlines()) - 1
        with Campaign.open(campaign) as c:
            assert sum(t.origin == "warm_start" for t in c.store.trials()) == rows, outcome.output


@pytest.mark.parametrize("command", ["status", "export"])
def test_status_and_export_answer_every_broken_campaign_file(handed_out: Path, tmp_path_factory: pytest.TempPathFactory,
                                                             command: str) -> None:
    @FUZZ
    @given(mutations=fuzz.campaign_mutations(handed_out))
    def check(mutations: list[fuzz.Mutation]) -> None:
        folder = tmp_path_factory.mktemp(command)
        campaign = fuzz.broken_copy(handed_out, mutations, folder / "c.sqlite")
        args = [command, str(campaign)] + (["-o", str(folder / "out.csv")] if command == "export" else [])
        outcome = invoke(args, campaign)
        assert outcome.problems(max_seconds=10) == [], ([m.__name__ for m in mutations], outcome.output[-600:])

    check()


def test_the_promise_is_checked_not_assumed() -> None:
    """The checker itself catches each broken promise (a fuzz test that cannot fail is no test)."""
    crashed = fuzz.Outcome("status", None, "", 0.1, False, "KeyError: 'trials'")
    changed = fuzz.Outcome("tell", 2, "error: x", 0.1, True)
    slow = fuzz.Outcome("validate", 2, "", 30.0, False)
    traced = fuzz.Outcome("validate", 1, "Traceback (most recent call last):\n  ...", 0.1, False)
    assert crashed.problems() and changed.problems(may_change=True) and slow.problems() and traced.problems()
    assert fuzz.Outcome("tell", 0, "recorded", 0.1, True).problems(may_change=True) == []


@pytest.mark.parametrize("statement", [
    "UPDATE campaign SET protocol_text = CAST(X'23ff20' AS TEXT)",  # text that is not UTF-8
    "UPDATE trials SET created_at = '[1,2'",
    "UPDATE proposals SET provenance = -1",
    "UPDATE trials SET state = 'zzz'",
    "UPDATE trials SET conditions = '{not json'",
    "UPDATE measurements SET value = 'x'",
    "UPDATE campaign SET versions = ''",
])
@pytest.mark.parametrize("command", ["status", "export", "report"])
def test_a_damaged_cell_is_named_not_a_traceback(handed_out: Path, tmp_path: Path, statement: str, command: str) -> None:
    """Cases the longer fuzz run (benchmarks/fuzz_inputs.py) found, kept as regression tests."""
    campaign = fuzz.broken_copy(handed_out, [fuzz.sql(statement)], tmp_path / "c.sqlite")
    output = {"status": [], "export": ["-o", str(tmp_path / "out.csv")], "report": ["-o", str(tmp_path / "r.html")]}
    outcome = invoke([command, str(campaign), *output[command]], campaign)
    assert outcome.problems() == [], outcome.output  # a command that never reads the cell may well succeed
    if outcome.exit_code != 0:
        assert outcome.exit_code == 2 and "damaged" in outcome.output and "sqlite3" in outcome.output, outcome.output
