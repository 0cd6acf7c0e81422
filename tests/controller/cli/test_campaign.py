"""`ask` and `tell` on real campaign files: bad input is exit 2 with a line that says what is wrong and
what to do, and nothing already stored changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.controller.campaign import Campaign
from tests.controller.cli.campaigns import invoke, refused, stored

# ---- tell: values that are not measurements ---------------------------------------------------------


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "nan cm^2/(V*s)"])
def test_tell_refuses_a_non_finite_value_and_says_how_to_record_a_failed_sample(handed_out: Path, raw: str) -> None:
    before = stored(handed_out)
    line = refused(invoke("tell", handed_out, "--trial", 1, f"phi_sum_mu_max={raw}"),
                   "trial 1", "phi_sum_mu_max", "not a finite number", "--failed")
    assert line.startswith("error: ")
    assert stored(handed_out) == before


def test_tell_stores_the_values_of_a_trial_together_or_not_at_all(handed_out: Path) -> None:
    before = stored(handed_out)
    refused(invoke("tell", handed_out, "--trial", 1, "phi_sum_mu_max=2.1e-3", "tau_half=nan"), "tau_half")
    assert stored(handed_out) == before  # the valid phi_sum_mu_max was not kept without its tau_half
    done = invoke("tell", handed_out, "--trial", 1, "phi_sum_mu_max=2.1e-3", "tau_half=180 ns")
    assert done.exit_code == 0, done.output
    with Campaign.open(handed_out) as c:
        assert c.store.trial(1).state == "measured"
        assert c.store.trial(1).values == {"phi_sum_mu_max": 2.1e-3, "tau_half": 180.0}


def test_a_failed_sample_is_recorded_with_failed_and_without_values(handed_out: Path) -> None:
    before = stored(handed_out)
    refused(invoke("tell", handed_out, "--trial", 2, "--failed", "phi_sum_mu_max=2.1e-3"),
            "trial 2", "--failed", "phi_sum_mu_max")
    assert stored(handed_out) == before  # a value given with --failed is not silently dropped
    assert invoke("tell", handed_out, "--trial", 2, "--failed").exit_code == 0
    with Campaign.open(handed_out) as c:
        assert (c.store.trial(2).state, c.store.trial(2).values) == ("failed", {})


@pytest.mark.parametrize("raw", ["0", "-2e-3", "0 cm^2/(V*s)"])
def test_tell_refuses_a_value_a_log_scale_objective_cannot_take(handed_out: Path, raw: str) -> None:
    before = stored(handed_out)
    refused(invoke("tell", handed_out, "--trial", 1, f"phi_sum_mu_max={raw}"),
            "trial 1", "phi_sum_mu_max", "log scale", "> 0")
    assert stored(handed_out) == before


@pytest.mark.parametrize(("args", "phrases"), [
    (["--trial", 99, "phi_sum_mu_max=1e-3"], ["trial 99", "no such trial"]),
    (["--trial", 3, "phi_sum_mu_max=1e-3", "tau_half=3 kg"], ["tau_half", "cannot convert 'kg' to 'ns'"]),
    (["--trial", 3, "colour=red"], ["colour", "not a measured quantity", "phi_sum_mu_max, tau_half"]),
    (["--trial", 3, "phi_sum_mu_max"], ["expected name=value"]),
    (["--trial", 3], ["missing a value for phi_sum_mu_max", "--failed"]),
    (["phi_sum_mu_max=1e-3"], ["--trial ID"]),
    (["--trial", 1, "phi_sum_mu_max=5e-3"], ["trial 1 is already measured"]),
])
def test_tell_refuses_what_is_not_a_result_of_a_waiting_trial(handed_out: Path, args: list, phrases: list[str]) -> None:
    assert invoke("tell", handed_out, "--trial", 1, "phi_sum_mu_max=1e-3").exit_code == 0
    before = stored(handed_out)
    refused(invoke("tell", handed_out, *args), *phrases)
    assert stored(handed_out) == before
