"""What a dry run found, as records: the report `closedloop validate --dry-run` prints, and its findings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from closedloop.controller.dryrun.checks import Coverage, LimitMargin
from closedloop.controller.report.schedule import Schedule


@dataclass
class Finding:
    """A safety or consistency problem: what happened, on which trial, at which command."""

    kind: str  # "instrument refusal", "safety gate refusal", "instrument fault", "campaign"
    trial: int | None
    command: str | None
    message: str



@dataclass
class DryRunReport:
    """What a dry run found. `exit_code`: 0 the campaign would run safely, 1 a problem appeared."""

    protocol: str
    name: str
    seed: int
    instrument: str
    campaign_file: str | None
    stop_reason: str
    states: dict[str, int]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    instrument_time_s: float
    campaign_time_s: float
    ramp_time_s: float
    operator_steps: list[dict[str, Any]]
    approvals: list[dict[str, Any]]
    operator_step_s: float
    dry_run_wall_s: float
    wall_time_estimate_s: float
    budget_wall_time_s: float | None
    transcript_trial: int | None
    transcript: list[dict[str, Any]]
    margins: list[LimitMargin]
    gate_checks: int
    coverage: Coverage | None
    schedule: Schedule | None  # which sample was on which station when, read back like a live campaign's
    problems: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # With fidelities: instrument time at the declared costs, in all and per source (Campaign.status's).
    spend: dict[str, Any] | None = None

    @property
    def safe(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.safe else 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["margins"] = [m.to_dict() for m in self.margins]
        out["coverage"] = None if self.coverage is None else self.coverage.to_dict()
        out["schedule"] = None if self.schedule is None else self.schedule.to_dict()
        return {"safe": self.safe, "exit_code": self.exit_code, **out}
