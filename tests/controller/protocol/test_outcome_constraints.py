"""Outcome constraints on any value the instrument measures, not only on objectives: `tau_half >= 100 ns`
on the TRMC screen whose one objective is phi_sum_mu_max. Checked by `validate` (CLI and library), with the
bound converted into the unit the instrument reports the value in."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.protocol.model import load_protocol
from closedloop.controller.protocol.validate import validate_protocol
from closedloop.planners.space import OutcomeConstraint
from tests.controller.protocol.edits import TRMC, edited, refused_at, validate_cli

SHIPPED_COMMENT = '# outcome_constraints: ["tau_half >= 100 ns"]'


def with_constraint(folder: Path, text: str) -> Path:
    return edited(folder, TRMC, (SHIPPED_COMMENT, f"outcome_constraints: [{text!r}]")).path


@pytest.mark.parametrize("text", ["tau_half >= 100 ns", "tau_half >= 0.1 us", "tau_half>=1e-7 s"])
def test_the_shipped_protocols_example_constraint_on_a_measured_value_is_valid(tmp_path: Path, text: str) -> None:
    assert SHIPPED_COMMENT in TRMC  # the example the shipped protocol shows its users
    path = with_constraint(tmp_path, text)
    protocol = load_protocol(path)
    assert "tau_half" not in protocol.objectives and validate_protocol(protocol).valid
    problem = protocol.to_problem()
    # In the unit the station reports tau_half in (ns), whatever unit the protocol wrote the bound in.
    assert problem.outcome_constraints == (OutcomeConstraint("tau_half", ">=", pytest.approx(100.0)),)
    assert [o.name for o in problem.objectives] == ["phi_sum_mu_max"]
    result = validate_cli(str(path))
    assert result.exit_code == 0, result.output
    assert f"subject to {text}   (measured, not optimized: the planner models it with its own GP)" in result.stdout


@pytest.mark.parametrize(("text", "fragments"), [
    ("thickness >= 300 nm", ["unknown quantity 'thickness'", "objective or a value the instrument measures",
                             "known: phi_sum_mu_max, tau_half"]),
    ("tau_hlaf >= 100 ns", ["unknown quantity 'tau_hlaf'", "did you mean 'tau_half'?"]),
    ("tau_half >= 100 kg", ["bound of tau_half", "cannot convert 'kg' to 'ns'"]),
])
def test_a_constraint_on_a_value_the_instrument_does_not_measure_is_refused_at_its_line(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = with_constraint(tmp_path, text)
    line = TRMC.splitlines().index(SHIPPED_COMMENT) + 1
    refused_at(validate_cli(str(path)), path, line, "outcome_constraints[0]", *fragments)
