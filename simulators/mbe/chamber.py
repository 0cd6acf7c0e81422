"""The whole MBE chamber in virtual time: Sr and Ru cells, the substrate heater, shutters, ozone, the
flux gauge and the pressure interlock, with a log of every command and a sampled temperature trace.

`advance(seconds)` moves every controller forward in closed form (see `cells.TemperatureController`),
so a two-hour growth costs one vectorised evaluation per controller, however long it is. While a trace
is being recorded the trajectories are evaluated on a fixed grid, still without stepping.

The chamber itself enforces the per-controller ramp-rate limits it was built with (a Eurotherm refuses a
faster setpoint rate than it was configured for): the driver above it chooses the rates, the hardware
keeps it honest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from closedloop.simulators.mbe.cells import (
    EffusionCell,
    FluxGauge,
    Interlock,
    PressureModel,
    Shutter,
    TemperatureController,
)
from closedloop.simulators.mbe.growth import (
    MONOLAYER_ANGSTROM,
    GrowthOutcome,
    RheedSettings,
    SrRuO3Window,
    grow,
    rheed_trace,
)

SR_CELL = EffusionCell.calibrated("Sr", at_celsius=470.0, bep_torr=5.0e-8, ea_ev=1.7, atoms_per_torr=7.8e20)
# Ru from a high-temperature cell; Ea near ruthenium's sublimation enthalpy (assumed, ~6 eV).
RU_CELL = EffusionCell.calibrated("Ru", at_celsius=1850.0, bep_torr=4.7e-8, ea_ev=6.0, atoms_per_torr=7.8e20)

# Where the chamber rests between growths: warm enough to stay outgassed, cold enough to save the charge.
IDLE_CELSIUS: dict[str, float] = {"sr_cell_temp": 300.0, "ru_cell_temp": 1200.0, "substrate_temp": 200.0}
LAG_S: dict[str, float] = {"sr_cell_temp": 40.0, "ru_cell_temp": 60.0, "substrate_temp": 90.0}
SHUTTER_SOURCES: dict[str, str] = {"sr": "sr_cell_temp", "ru": "ru_cell_temp"}
TRACE_EVERY_S = 30.0
READING_NOISE_K = 0.5
FLUX_NOISE = 0.02  # run-to-run scatter of the true flux (melt surface, PID wander)


@dataclass(frozen=True)
class ChamberEvent:
    """One command the chamber received, at chamber time `t_s` (virtual seconds).

    device: a controller name ("sr_cell_temp", "ru_cell_temp", "substrate_temp"), "shutter_sr",
    "shutter_ru", "ozone_flow", "flux_gauge" or "interlock". action: "ramp" (value = target, start =
    working setpoint then, rate_per_min, end_s = arrival), "open"/"close", "set" (ozone, value in sccm),
    "in"/"out", "check"/"trip" (value = pressure, Torr).
    """

    t_s: float
    device: str
    action: str
    value: float | None = None
    start: float | None = None
    rate_per_min: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class Aging:
    """The slow state of one growth: thermocouple offsets (K; a thermocouple reading high leaves the
    part colder) and the fraction of each charge's emitting surface already used up."""

    tc_offset_k: Mapping[str, float] = field(default_factory=dict)
    depletion: Mapping[str, float] = field(default_factory=dict)


def aging_for_growth(seed: int, growth_index: int) -> Aging:
    """The chamber's state at its `growth_index`-th growth: a seeded random walk of each thermocouple
    (0.15 K per growth plus a 0.02 K trend) and a charge that loses a fixed share per growth.

    A function of the index rather than of the chamber's past, so a campaign resumed in a new process
    sees the same chamber as the one that crashed.
    """
    n = max(0, int(growth_index))
    names = sorted(LAG_S)
    steps = np.random.default_rng([seed, 0xA61]).standard_normal((n, len(names))) * 0.15 + 0.02
    offsets = steps.sum(axis=0) if n else np.zeros(len(names))
    per_growth = {"sr_cell_temp": 1.0e-3, "ru_cell_temp": 5.0e-4}
    return Aging(
        tc_offset_k={name: float(o) for name, o in zip(names, offsets, strict=True)},
        depletion={name: min(0.5, share * n) for name, share in per_growth.items()},
    )


def growth_from(
    window: SrRuO3Window,
    temps_c: Mapping[str, float],
    ozone_sccm: float,
    aging: Aging | None = None,
    flux_factors: tuple[float, float] = (1.0, 1.0),
) -> GrowthOutcome:
    """The film grown at true temperatures `temps_c` with the shutters open; `flux_factors` scale the
    Sr and Ru fluxes (run-to-run flux noise). Its growth rate is the steady-state one."""
    aging = aging or Aging()
    sr = SR_CELL.atom_flux(temps_c["sr_cell_temp"], aging.depletion.get("sr_cell_temp", 0.0))
    ru = RU_CELL.atom_flux(temps_c["ru_cell_temp"], aging.depletion.get("ru_cell_temp", 0.0))
    return grow(window, sr * flux_factors[0], ru * flux_factors[1], temps_c["substrate_temp"], ozone_sccm)


def thickness_averaged(outcome: GrowthOutcome, growth_s: float) -> GrowthOutcome:
    """The film as an ex-situ thickness sees it: the growth rate averaged over `growth_s`, shutter
    transient included (growth is Sr-limited, so the Sr cell's transient is the one that counts)."""
    share = float(SR_CELL.integrated_transient(np.array(growth_s))) / growth_s
    return replace(outcome, growth_rate_a_per_s=outcome.growth_rate_a_per_s * share)


class Chamber:
    """The chamber's hardware state in virtual time, plus the command log (`events`)."""

    def __init__(self, max_rate_per_min: Mapping[str, float], pressure: PressureModel | None = None) -> None:
        missing = set(LAG_S) - set(max_rate_per_min)
        if missing:
            raise ValueError(
                f"no ramp-rate limit for {sorted(missing)}: give every heater a max rate in degC/min"
            )
        self.max_rate_per_min = dict(max_rate_per_min)
        self.t_s = 0.0
        self.controllers = {
            name: TemperatureController(name, IDLE_CELSIUS[name], LAG_S[name]) for name in LAG_S
        }
        self.shutters = {name: Shutter(name) for name in SHUTTER_SOURCES}
        self.ozone_sccm = 0.0
        self.gauge = FluxGauge()
        self.pressure_model = pressure or PressureModel()
        self.interlock = Interlock()
        self.aging = Aging()
        self.burst_torr = 0.0  # a transient pressure burst (a flake falling on a hot cell), for fault tests
        self.events: list[ChamberEvent] = []
        self._trace: dict[str, list[np.ndarray]] | None = None
        self._trace_rng: np.random.Generator | None = None
        self._next_sample_s = 0.0

    # --- commands -------------------------------------------------------------------------------

    def ramp(self, name: str, target: float, rate_per_min: float) -> float:
        """Ramp controller `name` to `target` degC at `rate_per_min`; returns the seconds the ramp takes."""
        limit = self.max_rate_per_min[name]
        if rate_per_min > limit:
            raise ValueError(f"{name}: ramp rate {rate_per_min} degC/min exceeds this heater's limit {limit}")
        controller = self.controllers[name]
        start = controller.working_setpoint
        controller.command(target, rate_per_min)
        duration = controller.ramp_remaining_s
        self._log(name, "ramp", target, start=start, rate_per_min=rate_per_min, end_s=self.t_s + duration)
        return duration

    def open_shutter(self, name: str) -> None:
        self.shutters[name].is_open = True
        self._log(f"shutter_{name}", "open")

    def close_shutter(self, name: str) -> None:
        self.shutters[name].is_open = False
        self._log(f"shutter_{name}", "close")

    def set_ozone(self, sccm: float) -> None:
        self.ozone_sccm = float(sccm)
        self._log("ozone_flow", "set", self.ozone_sccm)

    def move_gauge(self, inserted: bool) -> None:
        self.gauge.inserted = inserted
        self._log("flux_gauge", "in" if inserted else "out")

    def check_interlock(self, *, for_heat_or_gas: bool) -> bool:
        """Ask the interlock; logs the pressure it judged and whether it tripped."""
        p = self.pressure()
        ok = self.interlock.permits_heating(p) if for_heat_or_gas else self.interlock.permits_process(p)
        self._log("interlock", "check" if ok else "trip", p)
        return ok

    def go_idle(self) -> None:
        """Abort: every shutter closed, no ozone, gauge out, every heater ramping to idle at its limit."""
        for name in self.shutters:
            self.close_shutter(name)
        if self.ozone_sccm:
            self.set_ozone(0.0)
        if self.gauge.inserted:
            self.move_gauge(False)
        for name, idle in IDLE_CELSIUS.items():
            self.ramp(name, idle, self.max_rate_per_min[name])

    # --- state ----------------------------------------------------------------------------------

    def reading(self, name: str) -> float:
        """What the controller displays (its thermocouple), without noise."""
        return self.controllers[name].process_value

    def true_celsius(self, name: str) -> float:
        return self.controllers[name].process_value - self.aging.tc_offset_k.get(name, 0.0)

    def beam_bep(self, source: str) -> float:
        name = SHUTTER_SOURCES[source]
        cell = SR_CELL if source == "sr" else RU_CELL
        return float(cell.bep(self.true_celsius(name), self.aging.depletion.get(name, 0.0)))

    def pressure(self) -> float:
        heaters = [c.process_value for c in self.controllers.values()]
        return float(self.pressure_model.pressure(self.ozone_sccm, heaters)) + self.burst_torr

    def seconds_until_stable(self, tolerance_k: float) -> float:
        return max(c.seconds_until_stable(tolerance_k) for c in self.controllers.values())

    # --- time -----------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Let `seconds` of chamber time pass (negative or zero: nothing happens)."""
        if not seconds > 0:
            return
        if self._trace is not None:
            self._sample_until(self.t_s + seconds)
        for controller in self.controllers.values():
            controller.advance(seconds)
        self.t_s += seconds

    def start_trace(self, rng: np.random.Generator) -> None:
        """Record setpoints and (noisy) readings every `TRACE_EVERY_S` from now on."""
        self._trace = {key: [] for key in self._trace_keys()}
        self._trace_rng = rng
        self._next_sample_s = self.t_s

    def stop_trace(self) -> dict[str, np.ndarray]:
        """The recorded trace as arrays: "temp_t_s", "<name>_setpoint", "<name>_reading", "pressure_torr"."""
        trace, self._trace = self._trace or {}, None
        return {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in trace.items()}

    def film(
        self, growth_s: float, window: SrRuO3Window, rheed: RheedSettings, rng: np.random.Generator
    ) -> tuple[GrowthOutcome, np.ndarray, np.ndarray]:
        """The film that `growth_s` of growth from now produces, and its RHEED trace (seconds since the
        shutters opened, intensity) over the first `rheed.record_s`. The conditions are taken as they
        are now (the recipe waits for stable temperatures first); the caller lets the time pass."""
        sr_noise, ru_noise = (float(z) for z in rng.standard_normal(2))
        flux_factors = (1.0 + FLUX_NOISE * sr_noise, 1.0 + FLUX_NOISE * ru_noise)
        temps = {name: self.true_celsius(name) for name in self.controllers}
        outcome = growth_from(window, temps, self.ozone_sccm, self.aging, flux_factors)
        t = np.arange(0.0, min(growth_s, rheed.record_s), 1.0 / rheed.sample_hz)
        monolayers = outcome.growth_rate_a_per_s * SR_CELL.integrated_transient(t) / MONOLAYER_ANGSTROM
        intensity = rheed_trace(outcome, monolayers, t, rheed, rng)
        return thickness_averaged(outcome, growth_s), t, intensity

    # --- internals ------------------------------------------------------------------------------

    def _log(self, device: str, action: str, value: float | None = None, **ramp: float) -> None:
        self.events.append(ChamberEvent(self.t_s, device, action, value, **ramp))

    def _trace_keys(self) -> list[str]:
        keys = ["temp_t_s", "pressure_torr"]
        for name in self.controllers:
            keys += [f"{name}_setpoint", f"{name}_reading"]
        return keys

    def _sample_until(self, end_s: float) -> None:
        assert self._trace is not None and self._trace_rng is not None
        n = math.floor((end_s - self._next_sample_s) / TRACE_EVERY_S) + 1
        if n <= 0:
            return
        times = self._next_sample_s + TRACE_EVERY_S * np.arange(n)
        self._next_sample_s = float(times[-1]) + TRACE_EVERY_S
        self._trace["temp_t_s"].append(times)
        processes = []
        for name, controller in self.controllers.items():
            working, process = controller.trajectory(times - self.t_s)
            noise = READING_NOISE_K * self._trace_rng.standard_normal(n)
            self._trace[f"{name}_setpoint"].append(working)
            self._trace[f"{name}_reading"].append(process + noise)
            processes.append(process)
        pressure = self.pressure_model.pressure(self.ozone_sccm, processes) + self.burst_torr
        self._trace["pressure_torr"].append(np.broadcast_to(pressure, (n,)).copy())
