"""Every limit, bound, step, rate and duration a protocol gives must be a finite number (issue 19).

Comparisons with NaN are false and nothing is above infinity, so `max: .inf` or `min: .nan` would turn a
limit into no limit while looking like one. YAML's `.inf`, `.nan`, a literal too large for a float (1e400
reads as inf) and a quantity string that overflows are all refused, located at the value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.drivers.base import Limit
from tests.controller.protocol.edits import FURNACE, PARETO, TRMC, edited, problems, refused_at, validate_cli

LIMIT = "anneal_temp: {min: 20, max: 450, unit: degC, max_step: 300}"
HUGE_INT = "1" + "0" * 309  # 1e309: an integer no float can hold

# name: (base, old, new, the marker on the refused line, the field named)
CASES = {
    "envelope_max_inf": (FURNACE, LIMIT, LIMIT.replace("max: 450", "max: .inf"), "anneal_temp: {min", "instrument.envelope.anneal_temp.max"),
    "envelope_min_nan": (FURNACE, LIMIT, LIMIT.replace("min: 20", "min: .nan"), "anneal_temp: {min", "instrument.envelope.anneal_temp.min"),
    "envelope_max_1e400": (FURNACE, LIMIT, LIMIT.replace("max: 450", "max: 1e400"), "anneal_temp: {min", "instrument.envelope.anneal_temp.max"),
    "envelope_max_overflowing_quantity": (FURNACE, LIMIT, LIMIT.replace("max: 450", "max: '1e400 degC'"), "anneal_temp: {min",
                                          "instrument.envelope.anneal_temp.max"),
    "envelope_max_step_inf": (FURNACE, LIMIT, LIMIT.replace("max_step: 300", "max_step: .inf"), "anneal_temp: {min",
                              "instrument.envelope.anneal_temp.max_step"),
    "envelope_max_rate_inf": (FURNACE, LIMIT, LIMIT.replace("max_step: 300", "max_rate: .inf"), "anneal_temp: {min",
                              "instrument.envelope.anneal_temp.max_rate"),
    "space_bound_inf": (FURNACE, "low: 150, high: 400", "low: 150, high: .inf", "low: 150", "space.anneal_temp.high"),
    "space_bound_beyond_float": (FURNACE, "low: 150, high: 400", f"low: -{HUGE_INT}, high: 400", "high: 400", "space.anneal_temp.low"),
    "int_bound_beyond_float": (TRMC, "{type: int, low: 600,", f"{{type: int, low: -{HUGE_INT},", "type: int", "space.spin_speed.low"),
    "wall_time_inf": (FURNACE, "wall_time: 3 day", "wall_time: inf h", "wall_time", "budget.wall_time"),
    "trusted_region_inf": (FURNACE, "\napproval: none",
                           "\napproval: {mode: outside_region, trusted_region: {anneal_temp: {low: 150, high: 'inf degC'}}}",
                           "trusted_region", "approval.trusted_region.anneal_temp.high"),
    "reference_point_inf": (PARETO, "planner:", "reference_point: {phi_sum_mu_max: 1e-5, tau_half: .inf}\nplanner:",
                            "reference_point", "reference_point.tau_half"),
    "outcome_bound_overflowing": (PARETO, "planner:", "outcome_constraints: ['tau_half >= 1e400 ns']\nplanner:",
                                  "outcome_constraints: ['", "outcome_constraints[0]"),
    "outcome_bound_nan": (PARETO, "planner:", "outcome_constraints: ['tau_half >= nan ns']\nplanner:",
                          "outcome_constraints: ['", "outcome_constraints[0]"),
}


@pytest.mark.parametrize("name", CASES)
def test_a_non_finite_number_is_refused_where_it_is_written(tmp_path: Path, name: str) -> None:
    base, old, new, marker, field = CASES[name]
    bad = edited(tmp_path, base, (old, new))
    line = bad.line_of(marker)
    refused_at(validate_cli(str(bad.path)), bad.path, line, field, "finite")
    assert any(p.line == line and p.field == field and "finite" in p.message for p in problems(bad.path))


@pytest.mark.parametrize("limit", [{"max": float("inf")}, {"min": float("nan")}, {"max_step": float("inf")},
                                   {"max_rate": float("nan")}])
def test_a_driver_cannot_declare_a_non_finite_limit(limit: dict[str, float]) -> None:
    # Below the protocol: an envelope written in code is held to the same rule.
    with pytest.raises(ValueError, match="finite"):
        Limit(unit="degC", **limit)


CONSTRAINT = '"anneal_temp + 1.5 * anneal_time <= 550"'


@pytest.mark.parametrize("constraint", [
    "anneal_temp + 1e200 * 1e200 * anneal_time <= 550",  # a product of finite numbers
    "anneal_temp <= 1e400",  # a literal that reads as infinity
    "anneal_temp <= 1" + "0" * 400,  # an integer literal no float can hold
    "anneal_temp / 1e-320 <= 5",  # a division
    "1e308 * anneal_temp + 1e308 * anneal_time <= 1e308",  # finite terms whose range over the bounds is not
])
def test_a_constraint_that_overflows_is_refused_at_the_constraint(tmp_path: Path, constraint: str) -> None:
    # It used to end in linprog's ValueError traceback (or an OverflowError while reading the number).
    bad = edited(tmp_path, FURNACE, (CONSTRAINT, f'"{constraint}"'))
    refused_at(validate_cli(str(bad.path)), bad.path, bad.line_of(constraint[:12]), "constraints[0]", "overflow")
