"""The device model's noise-free answer over a protocol's region: PCE, for campaign benchmarks (registered
with emulator `smu` in `simulators.registry`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.simulators.truth import GroundTruth, SearchRegion


def device_ground_truth(options: Any, region: SearchRegion, units: Mapping[str, str]) -> GroundTruth:
    """PCE of the device model (simulators/device/model.py) with the options' device settings (`sim:smu`),
    or the defaults (rank correlation 0.8 with TRMC, 10 % device failures, landscape seed 0)."""
    from closedloop.simulators.device.model import DeviceModel, DeviceSettings

    settings = options.device_settings() if hasattr(options, "device_settings") else DeviceSettings()
    model = DeviceModel(settings)
    conditions, value = model.optimum_pce(region)
    return GroundTruth(
        quantity="pce",
        unit=units.get("pce", "%"),
        value=lambda c: float(model.true_pce(c)),
        optimum_conditions=conditions,
        optimum_value=float(value),
        method=(
            "DeviceModel.optimum_pce over the protocol's space and linear constraints: the TRMC model's "
            "optimizer (per solvent a grid, COBYLA, a spin-speed sweep, COBYLA) on the noise-free PCE of the "
            "single-diode cell at 100 mW/cm^2 (no device scatter, no failures)"
        ),
    )
