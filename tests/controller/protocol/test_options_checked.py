"""`planner.options` and the driver's `options` are checked by validate, located at the value (issue 19).

They used to be read only when `run` built the planner or the driver: after the campaign file was created,
ending in a traceback (a live MBE run with `poll_s: often` left the cells at their setpoints).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from closedloop.planners.options import FROM_INITIAL, PLANNER_OPTIONS
from closedloop.planners.registry import PLANNERS, make_planner
from tests.controller.protocol.edits import FURNACE, edited, refused_at, validate_cli
from tests.paths import PROTOCOLS

MBE = (PROTOCOLS / "mbe_srruo3.yaml").read_text()
PLANNER = "planner: {initial: {method: sobol, n: 6}, seed: 3}"


def with_options(options: str, acquisition: str = "") -> tuple[str, str]:
    extra = f", acquisition: {acquisition}" if acquisition else ""
    return PLANNER, f"planner: {{initial: {{method: sobol, n: 6}}, seed: 3{extra}, options: {options}}}"


@pytest.mark.parametrize(("options", "field", "words"), [
    ("{kernal: rbf}", "planner.options.kernal", "unknown key 'kernal'; did you mean 'kernel'?"),
    ("{kernel: laplace}", "planner.options.kernel", "use one of: auto, rbf, matern52, additive"),
    ("{num_restarts: many}", "planner.options.num_restarts", "valid integer"),
    ("{mc_samples: 0}", "planner.options.mc_samples", "must be >= 1"),
    ("{pad_failures: maybe}", "planner.options.pad_failures", "valid boolean"),
    ("{n_initial: 3}", "planner.options.n_initial", "set n_initial in planner.initial.n"),
])
def test_a_bad_planner_option_is_refused_where_it_is_written(tmp_path: Path, options: str, field: str, words: str) -> None:
    bad = edited(tmp_path, FURNACE, with_options(options))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("planner: {"), field, words)


def test_the_random_planner_takes_no_botorch_options(tmp_path: Path) -> None:
    bad = edited(tmp_path, FURNACE, with_options("{kernel: rbf}", acquisition="random"))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("planner: {"), "planner.options.kernel", "unknown key")


def test_good_planner_options_pass(tmp_path: Path) -> None:
    ok = edited(tmp_path, FURNACE, with_options("{kernel: matern52, mc_samples: 64, pad_failures: false}"))
    result = validate_cli(str(ok.path))
    assert result.exit_code == 0, result.stderr


def test_a_driver_option_of_the_wrong_kind_is_refused_by_validate(tmp_path: Path) -> None:
    bad = edited(tmp_path, MBE, ("  connection: sim://mbe", "  connection: sim://mbe\n  options: {poll_s: often}"))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of("poll_s"), "instrument.options.poll_s", "duration")


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_the_option_models_match_what_each_planner_takes(name: str) -> None:
    # The models are what validate and make_planner check; the constructors hold the defaults.
    factory = PLANNERS[name]()
    taken = {p.name: p.default for p in inspect.signature(factory).parameters.values()
             if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
    model = PLANNER_OPTIONS[name]
    assert set(model.model_fields) | set(FROM_INITIAL) == set(taken)
    assert {k: f.default for k, f in model.model_fields.items()} == {k: taken[k] for k in model.model_fields}


def test_make_planner_checks_option_types_with_the_same_model() -> None:
    with pytest.raises(ValueError, match="num_restarts"):
        make_planner("botorch", num_restarts="many")
    assert make_planner("botorch", n_initial=2, mc_samples=64).mc_samples == 64  # type: ignore[attr-defined]
