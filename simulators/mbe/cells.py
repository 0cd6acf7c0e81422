"""The hardware of an oxide MBE chamber as a simulator sees it: effusion cells, temperature controllers,
shutters, the beam-flux gauge, the chamber pressure and its interlock.

Temperatures are in degC at the interface (as the envelope declares them) and in kelvin inside the
Arrhenius law. Fluxes are BEP (beam-equivalent pressure, Torr) as the flux gauge reads them and atoms
per cm^2 per second where the film needs them.

Temperature control is a Eurotherm-style loop: the working setpoint moves towards the target no faster
than the setpoint rate limit, and the process value follows the working setpoint with a first-order lag
(time constant `tau_s`). Both have closed forms, so any stretch of time is one vectorised evaluation,
never a time-stepping loop. The thermocouple may drift: the loop holds the *reading* at the setpoint, so
a thermocouple that reads `tc_offset_k` high leaves the cell that much colder than the display says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BOLTZMANN_EV_PER_K = 8.617333262e-5
ZERO_CELSIUS_K = 273.15


def kelvin(celsius: float) -> float:
    return celsius + ZERO_CELSIUS_K


@dataclass(frozen=True)
class EffusionCell:
    """A source whose flux follows BEP = p0 * exp(-ea_ev / (k_B T)).

    `atoms_per_torr` converts BEP to an atomic flux (atoms/cm^2/s); it folds in the gauge's ion-gauge
    sensitivity and the element's mass, and is an assumed calibration constant per cell.
    `shutter_dip` / `shutter_tau_s`: opening the shutter removes the radiation it reflected back into the
    crucible, so the melt cools and the flux dips by a few percent until the controller recovers.
    """

    element: str
    p0_torr: float
    ea_ev: float
    atoms_per_torr: float
    shutter_dip: float = 0.03
    shutter_tau_s: float = 45.0

    @classmethod
    def calibrated(
        cls, element: str, *, at_celsius: float, bep_torr: float, ea_ev: float, atoms_per_torr: float
    ) -> EffusionCell:
        """A cell from one calibration point (BEP at a temperature) and its activation energy."""
        p0 = bep_torr * math.exp(ea_ev / (BOLTZMANN_EV_PER_K * kelvin(at_celsius)))
        return cls(element, p0, ea_ev, atoms_per_torr)

    def bep(self, celsius: float | np.ndarray, depletion: float = 0.0) -> float | np.ndarray:
        """BEP in Torr with the cell truly at `celsius`, after losing the fraction `depletion` of its
        emitting surface (a depleting charge shrinks the melt area the flux comes from)."""
        t_k = np.asarray(celsius, dtype=float) + ZERO_CELSIUS_K
        value = self.p0_torr * (1.0 - depletion) * np.exp(-self.ea_ev / (BOLTZMANN_EV_PER_K * t_k))
        return float(value) if np.ndim(value) == 0 else value

    def atom_flux(self, celsius: float, depletion: float = 0.0) -> float:
        """Atoms per cm^2 per second at the substrate."""
        return float(self.bep(celsius, depletion)) * self.atoms_per_torr

    def relative_slope_per_k(self, celsius: float) -> float:
        """d ln(BEP) / dT = Ea / (k_B T^2): the fractional flux change per kelvin."""
        return self.ea_ev / (BOLTZMANN_EV_PER_K * kelvin(celsius) ** 2)

    def shutter_transient(self, seconds_open: np.ndarray) -> np.ndarray:
        """Flux relative to steady state, a time `seconds_open` after the shutter opened."""
        return 1.0 - self.shutter_dip * np.exp(-np.asarray(seconds_open, dtype=float) / self.shutter_tau_s)

    def integrated_transient(self, seconds_open: np.ndarray) -> np.ndarray:
        """Integral of `shutter_transient` from 0 to `seconds_open` (seconds of steady-state flux)."""
        t = np.asarray(seconds_open, dtype=float)
        return t - self.shutter_dip * self.shutter_tau_s * (1.0 - np.exp(-t / self.shutter_tau_s))


@dataclass
class TemperatureController:
    """One PID loop with a setpoint rate limit (a cell or the substrate heater).

    State at the controller's current time: `working_setpoint` (ramps towards `target` at `rate_per_min`)
    and `process_value` (what the thermocouple reads, ignoring noise). `advance` moves both forward.
    """

    name: str
    process_value: float
    tau_s: float
    target: float = field(init=False)
    working_setpoint: float = field(init=False)
    rate_per_min: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        self.target = self.process_value
        self.working_setpoint = self.process_value

    def command(self, target: float, rate_per_min: float) -> None:
        """New target and setpoint rate limit; the ramp starts from the present working setpoint."""
        if not rate_per_min > 0:
            raise ValueError(f"{self.name}: ramp rate must be > 0 degC/min, got {rate_per_min!r}")
        self.target = float(target)
        self.rate_per_min = float(rate_per_min)

    @property
    def ramp_remaining_s(self) -> float:
        return abs(self.target - self.working_setpoint) / self.rate_per_min * 60.0

    def trajectory(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(working setpoint, process value) at `times_s` seconds from now (>= 0), without moving."""
        t = np.asarray(times_s, dtype=float)
        w0, p0, tau = self.working_setpoint, self.process_value, self.tau_s
        t_ramp = self.ramp_remaining_s
        slope = math.copysign(self.rate_per_min / 60.0, self.target - w0) if t_ramp > 0 else 0.0
        in_ramp = t < t_ramp
        # First-order lag driven by a linear ramp: pv = w(t) - slope*tau + (p0 - w0 + slope*tau) e^(-t/tau).
        ramp_w = w0 + slope * t
        ramp_pv = ramp_w - slope * tau + (p0 - w0 + slope * tau) * np.exp(-t / tau)
        pv_at_ramp_end = self.target - slope * tau + (p0 - w0 + slope * tau) * math.exp(-t_ramp / tau)
        hold_pv = self.target + (pv_at_ramp_end - self.target) * np.exp(-(t - t_ramp) / tau)
        working = np.where(in_ramp, ramp_w, self.target)
        process = np.where(in_ramp, ramp_pv, hold_pv)
        return working, process

    def advance(self, seconds: float) -> None:
        working, process = self.trajectory(np.array([seconds]))
        self.working_setpoint, self.process_value = float(working[0]), float(process[0])

    def seconds_until_stable(self, tolerance: float) -> float:
        """Time until the ramp has ended and the process value is within `tolerance` of the target."""
        t_ramp = self.ramp_remaining_s
        _, pv = self.trajectory(np.array([t_ramp]))
        error = abs(float(pv[0]) - self.target)
        return t_ramp + (self.tau_s * math.log(error / tolerance) if error > tolerance else 0.0)


@dataclass
class Shutter:
    name: str
    is_open: bool = False


@dataclass(frozen=True)
class PressureModel:
    """Chamber pressure (Torr): base pressure, cell outgassing that grows with temperature, and the
    ozone load the pumps balance (linear in flow at these pressures)."""

    base_torr: float = 2e-9
    torr_per_sccm_ozone: float = 1.5e-6
    outgassing_torr: float = 1e-9  # extra pressure per 1000 degC of hot cell or heater, summed

    def pressure(self, ozone_sccm: float, heater_celsius: Sequence[float | np.ndarray]) -> float | np.ndarray:
        """Pressure with this ozone flow and these heater temperatures (scalars, or arrays over time)."""
        outgassing = self.outgassing_torr * sum(np.maximum(t, 0.0) / 1000.0 for t in heater_celsius)
        return self.base_torr + outgassing + self.torr_per_sccm_ozone * max(0.0, ozone_sccm)


@dataclass
class Interlock:
    """The vacuum interlock: no heating and no gas above `max_to_heat_torr`, and nothing at all above
    `max_process_torr`. `tripped` holds the reason of the last refusal until `reset`."""

    max_to_heat_torr: float = 5e-7
    max_process_torr: float = 1e-4
    tripped: str | None = None

    def permits_heating(self, pressure_torr: float) -> bool:
        if pressure_torr > self.max_to_heat_torr:
            self.tripped = (
                f"chamber pressure {pressure_torr:.2e} Torr is above the interlock limit "
                f"{self.max_to_heat_torr:.1e} Torr for heating or opening gas"
            )
            return False
        return True

    def permits_process(self, pressure_torr: float) -> bool:
        if pressure_torr > self.max_process_torr:
            self.tripped = f"chamber pressure {pressure_torr:.2e} Torr is above the process limit {self.max_process_torr:.1e} Torr"
            return False
        return True

    def reset(self) -> None:
        self.tripped = None


@dataclass
class FluxGauge:
    """The beam-flux (ion) gauge on a retractable arm in front of the substrate. It reads the background
    plus the BEP of every open source, with `relative_noise` scatter per reading (2-3 % in practice)."""

    relative_noise: float = 0.025
    inserted: bool = False

    def read(self, rng: np.random.Generator, beam_torr: float, background_torr: float) -> float:
        if not self.inserted:
            raise RuntimeError("flux gauge read while retracted: move it in front of the substrate first")
        return max(
            0.0, beam_torr * (1.0 + self.relative_noise * float(rng.standard_normal())) + background_torr
        )
