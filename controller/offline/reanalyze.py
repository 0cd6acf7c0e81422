"""Recompute a campaign's derived values from its stored raw records with the current analysis: TRMC
transients and J-V sweeps.

The raw record (a TRMC `time_s`, `dPr_over_Pr` and `calibration`; a J-V station's forward and reverse
sweeps and `jv_setup`) is what the station measured; the values (phi_sum_mu_max and tau_half; pce, voc,
jsc and ff), the status and the fits are what an analysis version made of them.
A reanalysis adds the current version's values through `CampaignStore.add_reanalysis`, which marks the
previous ones superseded (kept, never deleted); the raw record itself is not rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.lifecycle import MEASUREMENT_STATES
from closedloop.drivers import jv_analysis, trmc_analysis
from closedloop.drivers.base import Measurement

RAW_ARTIFACTS = ("time_s", "dPr_over_Pr", "calibration")  # a TRMC transient


def _trmc(artifacts: Mapping[str, Any], instrument: str, duration_s: float) -> Measurement:
    return trmc_analysis.analyze_to_measurement(artifacts["time_s"], artifacts["dPr_over_Pr"], artifacts["calibration"],
                                                instrument=instrument, duration_s=duration_s)


def _jv(artifacts: Mapping[str, Any], instrument: str, duration_s: float) -> Measurement:
    return jv_analysis.analyze_to_measurement(artifacts, instrument=instrument, duration_s=duration_s)


@dataclass(frozen=True)
class Analysis:
    """A raw record a station stores (`raw` artifacts), the values its analysis derives, and the analysis."""

    raw: tuple[str, ...]
    derives: tuple[str, ...]
    run: Callable[[Mapping[str, Any], str, float], Measurement]


ANALYSES = (
    Analysis(RAW_ARTIFACTS, ("phi_sum_mu_max", "tau_half"), _trmc),
    Analysis(jv_analysis.RAW_ARTIFACTS, ("pce", "voc", "jsc", "ff"), _jv),
)
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
    derives: tuple[str, ...] = ()  # the values the analysis derives (the others a line's earlier steps measured)


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
        analysis = next((a for a in ANALYSES if all(name in artifacts for name in a.raw)), None)
        if analysis is None:
            continue
        old_analysis = _current_analysis(store, record.id)
        try:
            measurement = analysis.run(artifacts, record.instrument or "", record.duration_s or 0.0)
        except ValueError as e:
            results.append(TrialReanalysis(record.id, old_analysis, old_analysis, record.measurement_status,
                                           record.measurement_status or "", dict(record.values), dict(record.values),
                                           detail=f"not reanalyzed: {e}", derives=analysis.derives))
            continue
        # The raw record stays the current one: only what the analysis derived is replaced. What a line's
        # earlier steps measured (a film's thickness) is kept with the new values.
        measurement.artifacts = {k: v for k, v in measurement.artifacts.items() if k not in analysis.raw}
        kept = {k: v for k, v in record.values.items() if k not in analysis.derives}
        measurement.values = kept | dict(measurement.values)
        measurement.units = {k: record.units.get(k, "") for k in kept} | dict(measurement.units)
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
            derives=analysis.derives,
        ))
    if not results:
        selection = "the selected trials" if wanted is not None else "no measured or failed trial"
        raise NoRawTransients(
            f"{store.path}: {selection} has a stored raw record (a TRMC transient: {', '.join(RAW_ARTIFACTS)}; or "
            f"J-V sweeps: {', '.join(jv_analysis.RAW_ARTIFACTS)}); reanalysis needs a campaign measured by the TRMC "
            "or J-V (smu) driver or station"
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
