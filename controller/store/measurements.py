"""How one measurement becomes rows: vetting scalars, writing values, status and artifacts.

These functions run inside a transaction the `CampaignStore` opened; they never commit.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from closedloop.controller.store.artifacts import (
    EncodedArtifact,
    decode_artifact,
    encode_artifact,
    read_external,
    verify_inline,
    write_external,
)
from closedloop.controller.store.sqlite import Database
from closedloop.drivers.base import Measurement

# Where a trial goes when its measurement has this status.
STATE_FOR_STATUS = {"ok": "measured", "failed_sample": "failed", "instrument_fault": "abandoned"}


@dataclass(frozen=True)
class VettedMeasurement:
    """A measurement as it will be stored: only finite scalars; non-finite ones demote it to failed_sample."""

    status: str
    detail: str
    values: dict[str, float]
    non_finite: dict[str, str]

    @property
    def state(self) -> str:
        return STATE_FOR_STATUS[self.status]


def vet(trial_id: int, measurement: Measurement) -> VettedMeasurement:
    """Check a measurement before anything is written; raise ValueError naming what is wrong."""
    if measurement.status not in STATE_FOR_STATUS:
        raise ValueError(
            f"trial {trial_id}: measurement status {measurement.status!r} is not one of {sorted(STATE_FOR_STATUS)}"
        )
    values: dict[str, float] = {}
    non_finite: dict[str, str] = {}
    for name, value in measurement.values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"trial {trial_id}: measured value {name}={value!r} is not a number; the analysis must return floats"
            )
        number = float(value)
        if math.isfinite(number):
            values[name] = number
        else:
            non_finite[name] = repr(number)
    status, detail = measurement.status, measurement.detail
    if non_finite:
        # A NaN or inf must never reach the GP as a number: the sample counts as failed, and says why.
        listed = ", ".join(f"{name}={text}" for name, text in non_finite.items())
        status = "failed_sample" if status == "ok" else status
        detail = f"non-finite measured values: {listed}" + (f"; {detail}" if detail else "")
    return VettedMeasurement(status, detail, values, non_finite)


def encode_all(trial_id: int, artifacts: dict[str, Any]) -> dict[str, EncodedArtifact]:
    encoded = {}
    for name, value in artifacts.items():
        try:
            encoded[name] = encode_artifact(name, value)
        except ValueError as exc:
            raise ValueError(f"trial {trial_id}: {exc}") from None
    return encoded


def insert_measurement(
    db: Database,
    campaign_path: Path,
    trial_id: int,
    measurement: Measurement,
    vetted: VettedMeasurement,
    encoded: dict[str, EncodedArtifact],
    inline_limit: int,
) -> None:
    """Status row, scalar rows and artifact rows of one (re)analysis; current versions must be superseded first."""
    now = time.time()
    db.table("measurement_info").insert(
        {
            "trial_id": trial_id,
            "status": vetted.status,
            "detail": vetted.detail,
            "analysis": measurement.analysis,
            "analysis_version": measurement.analysis_version,
            "instrument": measurement.instrument,
            "duration_s": float(measurement.duration_s),
            "created_at": now,
        }
    )
    db.table("measurements").insert_all(
        {
            "trial_id": trial_id,
            "name": name,
            "value": value,
            "unit": measurement.units.get(name, ""),
            "status": vetted.status,
            "analysis": measurement.analysis,
            "analysis_version": measurement.analysis_version,
            "created_at": now,
        }
        for name, value in vetted.values.items()
    )
    for name, artifact in encoded.items():
        external = len(artifact.payload) > inline_limit
        db.table("artifacts").insert(
            {
                "trial_id": trial_id,
                "name": name,
                "kind": artifact.kind,
                "dtype": artifact.dtype,
                "shape": None if artifact.shape is None else json.dumps(list(artifact.shape)),
                "data": None if external else artifact.payload,
                "path": write_external(campaign_path, artifact) if external else None,
                "sha256": artifact.sha256,
                "size": len(artifact.payload),
                "analysis_version": measurement.analysis_version,
                "created_at": now,
            }
        )


def supersede(db: Database, trial_id: int, artifact_names: list[str]) -> None:
    """Mark the current analysis of a trial superseded: all scalars and status, and same-named artifacts."""
    db.execute("UPDATE measurements SET superseded = 1 WHERE trial_id = ? AND superseded = 0", [trial_id])
    db.execute("UPDATE measurement_info SET superseded = 1 WHERE trial_id = ? AND superseded = 0", [trial_id])
    db.execute(
        f"UPDATE artifacts SET superseded = 1 WHERE trial_id = ? AND superseded = 0 "
        f"AND name IN ({', '.join('?' * len(artifact_names))})",
        [trial_id, *artifact_names],
    )


def read_artifacts(db: Database, campaign_path: Path, trial_id: int) -> dict[str, Any]:
    """Current artifacts of a trial, decoded, each verified against its sha256."""
    out: dict[str, Any] = {}
    for row in db.query(
        "SELECT name, kind, data, path, sha256 FROM artifacts WHERE trial_id = ? AND superseded = 0 ORDER BY id",
        [trial_id],
    ):
        where = f"artifact {row['name']!r} of trial {trial_id}"
        if row["data"] is not None:
            payload = verify_inline(row["data"], row["sha256"], campaign_path, where)
        else:
            payload = read_external(campaign_path, row["path"], row["sha256"], where)
        out[row["name"]] = decode_artifact(row["kind"], payload)
    return out
