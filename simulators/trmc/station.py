"""An in-process simulated TRMC station behind the `Driver` interface, in virtual time.

One trial is what a robot station does: spin-coat (~1 min), anneal (anneal_time minutes), load the film
into the cavity, tune the cavity (f0, Q and dark reflected power drift slightly from trial to trial),
then acquire `averages` laser shots at 10 Hz. Every wait goes through `ctx.clock.sleep`, so a campaign
replays in seconds, and every step is journaled as the commands a real station would be sent.

The values returned are the ground truth of this sample (its own scatter included, measurement noise
excluded); the raw averaged transient and its calibration are artifacts, so the real analysis
(`drivers.trmc_analysis`, which simulators must not import) can be run on them and compared.

The random stream of a trial is `default_rng([seed, trial_id])`: re-running a trial id after a crash
makes the same film and the same record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import DriverDescription, InstrumentContext, Measurement, Value
from closedloop.drivers.trmc import TRMC_DESCRIPTION, TRMC_ENVELOPE
from closedloop.simulators.trmc.physics import Acquisition, Cavity, simulate_transient
from closedloop.simulators.trmc.process import DEFAULT_FLUENCE, Constraint, SearchBox, TrmcProcessModel

ANALYSIS_NAME = "trmc-sim-truth"
ANALYSIS_VERSION = "1.0"
SPIN_COAT_S = 60.0
LOAD_S = 30.0
TUNE_S = 20.0
SHOT_RATE_HZ = 10.0
UNITS = {"phi_sum_mu_max": "cm^2/(V*s)", "tau_half": "ns"}


class SimulatedTrmcStation:
    """A TRMC station made of the process model and the transient physics (`sim:trmc`)."""

    def __init__(
        self,
        seed: int = 0,
        name: str = "trmc-sim",
        averages: int = 64,
        wavelength: float = 500.0,
        failure_rate_scale: float = 1.0,
        fluence: float | None = None,
    ) -> None:
        defaults = {"averages": averages, "wavelength": wavelength}
        if fluence is not None:
            defaults["fluence"] = fluence
        TRMC_ENVELOPE.check(defaults)
        self.seed = seed
        self.name = name
        self.averages = int(averages)
        self.wavelength = wavelength
        self.model = TrmcProcessModel(
            wavelength=wavelength,
            failure_rate_scale=failure_rate_scale,
            fluence=DEFAULT_FLUENCE if fluence is None else fluence,
        )
        self.closed = False

    def describe(self) -> DriverDescription:
        return TRMC_DESCRIPTION

    def check(self, conditions: Mapping[str, Value]) -> None:
        TRMC_ENVELOPE.check(conditions)

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        expected = self.model.expected_film(conditions)  # refuses missing process parameters, before any I/O
        rng = np.random.default_rng([self.seed, ctx.trial_id])
        film, failed = self.model.sample_film(conditions, rng)
        excitation = self.model.excitation(conditions)
        averages = int(conditions.get("averages", self.averages))
        elapsed = 0.0

        def step(command: str, seconds: float) -> None:
            nonlocal elapsed
            ctx.journal("tx", command)
            ctx.clock.sleep(seconds)
            elapsed += seconds

        step(
            f"SPIN {conditions['solvent']} ACCEPTOR {float(conditions['acceptor_fraction']):.3f} "
            f"RPM {float(conditions['spin_speed']):.0f}",
            SPIN_COAT_S,
        )
        anneal_min = float(conditions["anneal_time"])
        step(f"ANNEAL {float(conditions['anneal_temp']):.1f} C {anneal_min:.2f} MIN", 60.0 * anneal_min)
        step("LOAD CAVITY", LOAD_S)
        cavity = self._tune(ctx.trial_id, rng)
        step("TUNE", TUNE_S)
        ctx.journal(
            "rx", f"F0 {cavity.f0_hz / 1e9:.6f} GHZ Q {cavity.q:.0f} PR_DARK {self._dark_power(rng):.3f} MW"
        )
        acquisition = Acquisition(averages=averages, baseline_offset=self._baseline_drift(ctx.trial_id))
        step(
            f"ACQ LAMBDA {excitation.wavelength_nm:.0f} NM FLUENCE {excitation.fluence:.3e} AVG {averages}",
            averages / SHOT_RATE_HZ,
        )
        transient = simulate_transient(film, excitation, cavity, acquisition, rng, calibration_film=expected)
        ctx.journal(
            "rx", f"CURVE {transient.time_s.size} POINTS DT {transient.time_s[1] - transient.time_s[0]:.3e} S"
        )
        common: dict[str, Any] = {
            "artifacts": {
                "time_s": transient.time_s.astype(np.float64),
                "dPr_over_Pr": transient.dPr_over_Pr.astype(np.float64),
                "calibration": transient.calibration,
            },
            "analysis": ANALYSIS_NAME,
            "analysis_version": ANALYSIS_VERSION,
            "instrument": self.name,
            "duration_s": elapsed,
        }
        if failed:
            return Measurement(status="failed_sample", detail="no photoconductive signal", **common)
        values = {"phi_sum_mu_max": transient.truth.phi_sum_mu_max, "tau_half": transient.truth.tau_half_ns}
        return Measurement(values=values, units=dict(UNITS), **common)

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        """A film that was mid-measurement when the controller died is lost: the trial must be re-run."""
        return None

    def safe_state(self) -> None:
        """Nothing to make safe in a simulation: the virtual laser shutter is simply considered closed."""

    def close(self) -> None:
        self.closed = True

    def truth(self, conditions: Mapping[str, Value]) -> dict[str, float]:
        """Noise-free expected phi_sum_mu_max, tau_half and failure probability at `conditions`."""
        return self.model.truth(conditions)

    def optimum(
        self, constraints: tuple[Constraint, ...] = (), box: SearchBox | None = None
    ) -> tuple[dict[str, Value], float]:
        """Where the expected phi_sum_mu_max is highest, and its value (see TrmcProcessModel.optimum)."""
        return self.model.optimum(constraints, box)

    def _tune(self, trial_id: int, rng: np.random.Generator) -> Cavity:
        """The cavity with this sample loaded: a slow drift over trials plus a little loading scatter."""
        phase = 2.0 * math.pi * (self.seed % 97) / 97.0
        drift = math.sin(trial_id / 25.0 + phase)
        return Cavity(
            f0_hz=9.1e9 * (1.0 + 3e-4 * drift + 5e-5 * rng.standard_normal()),
            q=2500.0 * (1.0 + 0.03 * drift + 0.01 * rng.standard_normal()),
        )

    def _dark_power(self, rng: np.random.Generator) -> float:
        return 3.0 * (1.0 + 0.02 * rng.standard_normal())  # mW reflected off resonance

    def _baseline_drift(self, trial_id: int) -> float:
        """Detector baseline offset (dPr/Pr), wandering slowly from measurement to measurement."""
        return 4e-5 * math.sin(trial_id / 17.0 + 1.3 * (self.seed % 89))
