"""The device simulator's settings, apart from the model (which needs scipy) so the simulator registry can
offer them as options without loading it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSettings:
    proxy_correlation: float = 0.8  # Spearman rank correlation of TRMC true phi_sum_mu_max vs true PCE over the space
    failure_rate: float = 0.1  # device-level failures (shorts, pinholes) TRMC cannot see, on top of film failures
    seed: int = 0  # fixes the hidden device-only landscape (contacts, interlayers)

    def __post_init__(self) -> None:
        if not -1.0 <= self.proxy_correlation <= 1.0:
            raise ValueError(f"proxy_correlation is a rank correlation in [-1, 1], got {self.proxy_correlation}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate is a probability in [0, 1], got {self.failure_rate}")
