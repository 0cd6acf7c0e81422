"""The campaign file: one crash-safe SQLite file per campaign (WAL, one writer, many readers) holding the
protocol, every trial and its state history, every command and reply, measurements with their raw
artifacts, and each proposal's provenance. Also the tidy export (CSV / Parquet + a JSON sidecar)."""

from closedloop.controller.store.campaign_store import CampaignStore
from closedloop.controller.store.errors import (
    CampaignFileError,
    CampaignLocked,
    InvalidTransition,
    StoreError,
    UnknownTrial,
)
from closedloop.controller.store.file import software_versions
from closedloop.controller.store.reads import ProposalRecord, TrialRecord

__all__ = [
    "CampaignFileError",
    "CampaignLocked",
    "CampaignStore",
    "InvalidTransition",
    "ProposalRecord",
    "StoreError",
    "TrialRecord",
    "UnknownTrial",
    "software_versions",
]
