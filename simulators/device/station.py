"""An in-process simulated J-V station behind the `Driver` interface, in virtual time (`sim:smu`).

One trial: mount the device made to the trial's recipe, soak it in light, a forward and a reverse sweep,
as the SMU driver runs it (simulators/device/wire.py is the same cell behind the wire). The values are
the noise-free figures of this device (its scatter included, measurement noise excluded); the raw sweeps
are artifacts, so the real analysis (drivers/jv_analysis.py) can be run on them and compared. A failed
device is a failed sample with its reason. The random stream of a trial is `default_rng([seed, trial_id])`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import DriverDescription, InstrumentContext, Measurement, Value
from closedloop.drivers.smu import MEASURES, RAW_SWEEPS, SmuOptions, check_trial, smu_description, trial_sweep
from closedloop.simulators.device.diode import DiodeParameters, cell_figures, jv_curve
from closedloop.simulators.device.model import DeviceModel, DeviceSettings

ANALYSIS_NAME = "smu-sim-truth"
ANALYSIS_VERSION = "1.0"
LOAD_S = 60.0


def smu_sweep(cell: DiodeParameters, start: float, stop: float, step: float, *, area_cm2: float, compliance_A: float,
              lit: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(voltage in V, current into the cell in A) of one staircase sweep as a 2400-class SMU reads it:
    noise 20 nA + 0.02 % of the current, clipped at the compliance; a forward sweep reads a 1 % lower
    photocurrent than a reverse one (slow trap filling: a small hysteresis); dark with the shutter closed."""
    signed = abs(step) if stop >= start else -abs(step)
    voltage = start + signed * np.arange(int(round(abs(stop - start) / abs(step))) + 1)
    light = (0.99 if signed > 0 else 1.0) if lit else 0.0
    shone = DiodeParameters(cell.jph * light, cell.j0, cell.n, cell.rs, cell.rsh)
    current = -jv_curve(voltage, shone) * area_cm2
    current = current + rng.normal(0.0, 2e-8 + 2e-4 * np.abs(current))
    return voltage, np.clip(current, -compliance_A, compliance_A)


class SimulatedDeviceStation:
    """Devices made to each trial's recipe by the device model, measured without a wire."""

    def __init__(self, seed: int = 0, options: SmuOptions | None = None, settings: DeviceSettings | None = None,
                 name: str = "smu-sim") -> None:
        self.seed = seed
        self.options = options or SmuOptions()
        if self.options.sample_from == "line":
            raise ValueError("sim:smu makes its own devices; a line's J-V step is driver: smu on sim://smu")
        self.model = DeviceModel(settings or DeviceSettings())
        self.name = name

    def describe(self) -> DriverDescription:
        return smu_description(self.options)

    def check(self, conditions: Mapping[str, Value]) -> None:
        check_trial(self.options, conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        opts, s = self.options, trial_sweep(self.options, conditions)
        rng = np.random.default_rng([self.seed, ctx.trial_id])
        device = self.model.sample_device(conditions, rng)
        ctx.journal("tx", f"MOUNT DEVICE {ctx.trial_id}")
        sweep_s = opts.sweep_seconds(s["sweep_start"], s["sweep_stop"], s["sweep_step"])
        elapsed = LOAD_S + s["light_soak"] + 2.0 * sweep_s
        ctx.clock.sleep(elapsed)
        artifacts: dict[str, Any] = {}
        ends = {"forward": (s["sweep_start"], s["sweep_stop"]), "reverse": (s["sweep_stop"], s["sweep_start"])}
        for direction, (start, stop) in ends.items():
            ctx.journal("tx", f"SWEEP {start:g} V TO {stop:g} V STEP {s['sweep_step']:g} V")
            artifacts[f"voltage_{direction}_V"], artifacts[f"current_{direction}_A"] = smu_sweep(
                device.cell, start, stop, s["sweep_step"], area_cm2=opts.cell_area, compliance_A=s["compliance"],
                lit=True, rng=rng)
        artifacts[RAW_SWEEPS[-1]] = {"area_cm2": opts.cell_area, "lamp_power_mW_cm2": opts.lamp_power,
                                     "compliance_A": s["compliance"]}
        common: dict[str, Any] = {"artifacts": artifacts, "analysis": ANALYSIS_NAME, "analysis_version": ANALYSIS_VERSION,
                                  "instrument": self.name, "duration_s": elapsed}
        if device.failure is not None:
            return Measurement(status="failed_sample", detail=device.failure, **common)
        values = cell_figures(device.cell, 1e-3 * opts.lamp_power)
        return Measurement(values=values, units=dict(MEASURES), **common)

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        """A device that was mid-measurement when the controller died is measured again."""
        return None

    def safe_state(self) -> None:
        """Nothing to make safe in a simulation: output off and shutter closed are implied."""

    def close(self) -> None:
        """No link to release."""

    def truth(self, conditions: Mapping[str, Value]) -> dict[str, float]:
        """Noise-free PCE (%) and the failure probability at `conditions`."""
        return {"pce": self.model.true_pce(conditions), "failure_probability": self.model.failure_probability(conditions)}
