"""Recompute a campaign's derived TRMC values from its stored raw transients with the current analysis.

The raw record (`time_s`, `dPr_over_Pr`) and its `calibration` are what the station measured; the
values (phi_sum_mu_max, tau_half), the status and the fits are what an analysis version made of them.
A reanalysis adds the current version's values through `CampaignStore.add_reanalysis`, which marks the
previous ones superseded (kept, never deleted); the raw record itself is not rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.lifecycle import MEASUREMENT_STATES
from closedloop.drivers.trmc_analysis import analyze_to_measurement

RAW_ARTIFACTS = ("time_s", "dPr_over_Pr", "calibration")
_ANALYSIS_EVENT_STATES = ("measured", "failed")


class NoRawTransients(ValueError):
    """The campaign holds no trial with a stored raw transient: there is nothing to reanalyze."""


@dataclass(frozen=True)
class TrialReanalysis:
    """One trial before and after: analysis "name version", measurement status and values."""

    trial_id: int
    old_analysis: str
    new_analysis: str
    old_status: str | None
    new_status: str
    old_values: dict[str, float] = field(default_factory=dict)
    new_values: dict[str, float] = field(default_factory=dict)
    detail: str = ""


def reanalyze_campaign(store: CampaignStore, trial_ids: Iterable[int] | None = None) -> list[TrialReanalysis]:
    """Reanalyze every measured or failed trial with a raw transient (or only `trial_ids`).

    Raises NoRawTransients when none of the selected trials has one. A record the analysis refuses
    (ValueError) is reported in `detail` and left as it was.
    """
    wanted = None if trial_ids is None else set(trial_ids)
    results = []
    for record in store.trials(MEASUREMENT_STATES):
        if wanted is not None and record.id not in wanted:
            continue
        artifacts = store.artifacts(record.id)
        if not all(name in artifacts for name in RAW_ARTIFACTS):
            continue
        old_analysis = _current_analysis(store, record.id)
        try:
            measurement = analyze_to_measurement(
                artifacts["time_s"],
                artifacts["dPr_over_Pr"],
                artifacts["calibration"],
                instrument=record.instrument or "",
                duration_s=record.duration_s or 0.0,
            )
        except ValueError as e:
            results.append(TrialReanalysis(record.id, old_analysis, old_analysis, record.measurement_status,
                                           record.measurement_status or "", dict(record.values), dict(record.values),
                                           detail=f"not reanalyzed: {e}"))
            continue
        # The raw record stays the current one: only what the analysis derived is replaced.
        measurement.artifacts = {k: v for k, v in measurement.artifacts.items() if k not in RAW_ARTIFACTS}
        store.add_reanalysis(record.id, measurement)
        results.append(TrialReanalysis(
            trial_id=record.id,
            old_analysis=old_analysis,
            new_analysis=f"{measurement.analysis} {measurement.analysis_version}",
            old_status=record.measurement_status,
            new_status=measurement.status,
            old_values=dict(record.values),
            new_values=dict(measurement.values),
            detail=measurement.detail,
        ))
    if not results:
        selection = "the selected trials" if wanted is not None else "no measured or failed trial"
        raise NoRawTransients(
            f"{store.path}: {selection} has a stored raw transient ({', '.join(RAW_ARTIFACTS)}); "
            "reanalysis needs a campaign measured by the TRMC driver or station"
        )
    return results


def _current_analysis(store: CampaignStore, trial_id: int) -> str:
    """ "name version" of the analysis behind the trial's current values, from its latest journal entry."""
    for event in reversed(store.events(trial_id=trial_id)):
        data = event.get("data") or {}
        analyzed = event["kind"] == "reanalysis" or event.get("to_state") in _ANALYSIS_EVENT_STATES
        if analyzed and "analysis_version" in data:
            return f"{data.get('analysis') or '?'} {data['analysis_version']}".strip()
    return ""
