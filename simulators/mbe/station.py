"""A simulated oxide MBE system behind the Driver interface, in process and in virtual time.

`run` walks the recipe a grower follows for one SrRuO3 film: pressure interlock, ramp the cells and the
substrate at rates within the envelope, wait for stable temperatures, measure each beam on the flux
gauge, open the ozone, open the shutters and grow while RHEED records, close up, cool the substrate in
ozone, then the ex-situ RRR and XRD. Every command a real system would be sent is journaled in
Eurotherm style ("RU_CELL RATE 10.0", "RU_CELL SP 1865.0", "SHUTTER RU OPEN"), and every setpoint,
ramp, shutter and gas event lands in `history` with its chamber time.

The chamber persists between trials, as a real one does: the next growth ramps from wherever the last
one left the cells (idling), so durations depend on the order of trials. The film itself does not: its
noise comes from `np.random.default_rng([seed, trial_id])` and the chamber's slow drift from the trial
id (`aging_for_growth`), so a trial gives the same values whatever ran before it.

Example:
    >>> from closedloop.drivers.base import InstrumentContext
    >>> from closedloop.simulators.emulator import FollowedClock   # a clock that only counts
    >>> mbe = SimulatedMbeSystem(seed=1)
    >>> m = mbe.run({**EXAMPLE_FIXED, "ru_cell_temp": 1877.0, "substrate_temp": 758.0, "ozone_flow": 6.0},
    ...             InstrumentContext(clock=FollowedClock(), trial_id=1))
    >>> m.status, round(m.values["rrr"])
    ('ok', 78)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import cached_property
from typing import Any

import numpy as np
from scipy.optimize import minimize

from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Measurement,
    Value,
    require_settings,
)
from closedloop.drivers.mbe import MBE_DESCRIPTION, MBE_ENVELOPE
from closedloop.simulators.mbe.chamber import (
    IDLE_CELSIUS,
    READING_NOISE_K,
    Chamber,
    ChamberEvent,
    aging_for_growth,
    growth_from,
    thickness_averaged,
)
from closedloop.simulators.mbe.growth import (
    GrowthOutcome,
    MeasurementScatter,
    RheedSettings,
    SrRuO3Window,
    measure,
    rheed_damping_s,
)

# The search space the example protocol (protocols/mbe_srruo3.yaml) should use with this simulator.
EXAMPLE_RANGES: dict[str, tuple[float, float]] = {
    "ru_cell_temp": (1830.0, 1890.0),
    "substrate_temp": (550.0, 850.0),
    "ozone_flow": (0.5, 10.0),
}
EXAMPLE_FIXED: dict[str, float] = {"sr_cell_temp": 470.0, "growth_time": 60.0}

REQUIRED = ("sr_cell_temp", "ru_cell_temp", "substrate_temp", "ozone_flow")
DEFAULT_GROWTH_MIN = 60.0
HEATERS: dict[str, str] = {
    "sr_cell_temp": "SR_CELL",
    "ru_cell_temp": "RU_CELL",
    "substrate_temp": "SUBSTRATE",
}
STABLE_WITHIN_K = 0.5
SOAK_S = 300.0  # after the ramps, let the melts settle before trusting the flux
GAUGE_SETTLE_S = 60.0  # per flux-gauge reading, past the shutter transient
OZONE_SETTLE_S = 120.0
UNLOAD_BELOW_C = 250.0  # the film keeps its oxygen if it cools in ozone to here
BURST_TORR = 2e-6


class SimulatedMbeSystem:
    """An MBE chamber growing SrRuO3, driven like the real system (see the module docstring).

    `fault_rate`: chance per trial of a pressure burst that trips the interlock before anything heats
    (an `InstrumentFault`, for exercising retries). `ex_situ_s`: virtual time for transfer, XRD and the
    RRR transport measurement after the growth.
    """

    virtual_time = True

    def __init__(
        self,
        seed: int = 0,
        name: str = "mbe-sim",
        *,
        fault_rate: float = 0.0,
        ex_situ_s: float = 3 * 3600.0,
        window: SrRuO3Window | None = None,
        rheed: RheedSettings | None = None,
        scatter: MeasurementScatter | None = None,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate!r}")
        self.seed = seed
        self.name = name
        self.fault_rate = fault_rate
        self.ex_situ_s = ex_situ_s
        self.window = window or SrRuO3Window()
        self.rheed = rheed or RheedSettings()
        self.scatter = scatter or MeasurementScatter()
        self.max_rate = {
            heater: float(MBE_ENVELOPE.limits[heater].max_rate or math.inf) for heater in HEATERS
        }
        self.chamber = Chamber(self.max_rate)
        self._clock_at_last_end: float | None = None

    @property
    def history(self) -> list[ChamberEvent]:
        """Every command the chamber received, in order, with chamber timestamps (virtual seconds)."""
        return self.chamber.events

    # --- Driver protocol ------------------------------------------------------------------------

    def describe(self) -> DriverDescription:
        return MBE_DESCRIPTION

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse (never clamp) anything outside the envelope, and a recipe missing a setting."""
        MBE_ENVELOPE.check(conditions)
        require_settings(conditions, REQUIRED, "required by the growth recipe; add it to the protocol's space (type: fixed for a constant)")

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        setpoints = {name: float(conditions[name]) for name in HEATERS}
        growth_s = float(conditions.get("growth_time", DEFAULT_GROWTH_MIN)) * 60.0
        # Separate streams, so that how long the ramps took (trace samples drawn) never shifts the film.
        streams = np.random.default_rng([self.seed, ctx.trial_id]).spawn(4)
        fault_rng, readback_rng, film_rng, trace_rng = streams

        chamber = self.chamber
        self._idle_until(ctx.clock.now())
        chamber.aging = aging_for_growth(self.seed, ctx.trial_id)
        start_s, first_event = chamber.t_s, len(chamber.events)
        chamber.start_trace(trace_rng)

        self._heat_up(ctx, setpoints, readback_rng, pressure_burst=fault_rng.random() < self.fault_rate)
        beam = self._measure_beams(ctx, readback_rng)
        film, rheed_t, rheed_intensity = self._grow(ctx, float(conditions["ozone_flow"]), growth_s, film_rng)
        self._cool_down(ctx)
        self._wait(ctx, self.ex_situ_s)

        values = measure(film, film_rng, self.scatter)
        for quantity, value in values.items():
            ctx.journal("rx", f"EX-SITU {quantity.upper()} {value:.6g}")
        self._clock_at_last_end = ctx.clock.now()
        trace = chamber.stop_trace()
        artifacts: dict[str, Any] = {
            "rheed_t_s": rheed_t,
            "rheed_intensity": rheed_intensity,
            **trace,
            "beam_flux": beam,
            "chamber_events": [asdict(e) for e in chamber.events[first_event:]],
        }
        return Measurement(
            values=values,
            units={q: MBE_DESCRIPTION.measures[q] for q in values},
            status="ok" if film.ok else "failed_sample",
            artifacts=artifacts,
            analysis="mbe-sim-truth",
            analysis_version="1",
            instrument=self.name,
            detail="" if film.ok else film.phase,
            duration_s=chamber.t_s - start_s,
        )

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return None  # a simulated film interrupted mid-growth is lost, like a real one

    def safe_state(self) -> None:
        """Close every shutter, stop the ozone, retract the gauge, ramp every heater to idle at its limit."""
        # safe_state runs on the way out of failures; raising here would hide the original error.
        with contextlib.suppress(Exception):
            self.chamber.go_idle()

    def close(self) -> None:
        self.safe_state()

    # --- ground truth ---------------------------------------------------------------------------

    def truth(self, conditions: Mapping[str, Value]) -> dict[str, float | str]:
        """The noise-free film at these conditions (nominal temperatures, fresh charges, no flux noise):
        "phase" ("SrRuO3" or "wrong phase: ..."), "growth_rate", "rheed_damping_s", and "rrr" and
        "xrd_fwhm" when the phase is right."""
        self.check(conditions)
        temps = {name: float(conditions[name]) for name in HEATERS}
        growth_s = float(conditions.get("growth_time", DEFAULT_GROWTH_MIN)) * 60.0
        film = thickness_averaged(growth_from(self.window, temps, float(conditions["ozone_flow"])), growth_s)
        result: dict[str, float | str] = {
            "phase": film.phase,
            "growth_rate": film.growth_rate_a_per_s,
            "rheed_damping_s": rheed_damping_s(film, self.rheed),
        }
        if film.rrr is not None and film.xrd_fwhm_deg is not None:
            result.update(rrr=film.rrr, xrd_fwhm=film.xrd_fwhm_deg)
        return result

    def optimum(self) -> tuple[dict[str, float], float]:
        """The best conditions over `EXAMPLE_RANGES` (with `EXAMPLE_FIXED`) and their expected RRR."""
        return self._optimum

    @cached_property
    def _optimum(self) -> tuple[dict[str, float], float]:
        return best_rrr_over(self.truth, EXAMPLE_RANGES, EXAMPLE_FIXED)

    # --- recipe steps ---------------------------------------------------------------------------

    def _wait(self, ctx: InstrumentContext, seconds: float) -> None:
        self.chamber.advance(seconds)
        ctx.clock.sleep(seconds)

    def _idle_until(self, clock_now: float) -> None:
        # Between trials the chamber idled (cells heading to idle); a clock that did not move on, or a
        # fresh clock, means no idle time passed.
        if self._clock_at_last_end is not None:
            self.chamber.advance(clock_now - self._clock_at_last_end)

    def _ramp(self, ctx: InstrumentContext, heater: str, target: float) -> None:
        rate = self.max_rate[heater]
        ctx.journal("tx", f"{HEATERS[heater]} RATE {rate:.1f}")
        ctx.journal("tx", f"{HEATERS[heater]} SP {target:.1f}")
        self.chamber.ramp(heater, target, rate)

    def _query(self, ctx: InstrumentContext, query: str, reply: str) -> None:
        ctx.journal("tx", query)
        ctx.journal("rx", f"{query.rstrip('?')} {reply}")

    def _require_vacuum(self, ctx: InstrumentContext, *, for_heat_or_gas: bool) -> None:
        pressure = self.chamber.pressure()
        self._query(ctx, "GAUGE P?", f"{pressure:.2e}")
        if not self.chamber.check_interlock(for_heat_or_gas=for_heat_or_gas):
            reason = self.chamber.interlock.tripped
            self.chamber.interlock.reset()
            self.safe_state()
            self.chamber.stop_trace()
            raise InstrumentFault(f"{self.name}: interlock refused: {reason}; check the chamber, then retry")

    def _heat_up(
        self,
        ctx: InstrumentContext,
        setpoints: dict[str, float],
        rng: np.random.Generator,
        *,
        pressure_burst: bool,
    ) -> None:
        """Interlock, then every heater to its setpoint at its rate limit; wait until stable and soaked."""
        self.chamber.burst_torr = BURST_TORR if pressure_burst else 0.0
        try:
            self._require_vacuum(ctx, for_heat_or_gas=True)
        finally:
            self.chamber.burst_torr = 0.0  # a burst passes; the next trial finds the chamber pumped down
        for heater, target in setpoints.items():
            self._ramp(ctx, heater, target)
        self._wait(ctx, self.chamber.seconds_until_stable(STABLE_WITHIN_K) + SOAK_S)
        for heater, device in HEATERS.items():
            reading = self.chamber.reading(heater) + READING_NOISE_K * float(rng.standard_normal())
            self._query(ctx, f"{device} PV?", f"{reading:.1f}")

    def _grow(
        self, ctx: InstrumentContext, ozone: float, growth_s: float, rng: np.random.Generator
    ) -> tuple[GrowthOutcome, np.ndarray, np.ndarray]:
        """Ozone on (behind the interlock), shutters open for `growth_s` while RHEED records, shutters shut."""
        self._require_vacuum(ctx, for_heat_or_gas=True)
        ctx.journal("tx", f"OZONE FLOW {ozone:.2f}")
        self.chamber.set_ozone(ozone)
        self._wait(ctx, OZONE_SETTLE_S)
        self._require_vacuum(ctx, for_heat_or_gas=False)
        for source in ("SR", "RU"):
            ctx.journal("tx", f"SHUTTER {source} OPEN")
            self.chamber.open_shutter(source.lower())
        ctx.journal("tx", "RHEED START")
        grown = self.chamber.film(growth_s, self.window, self.rheed, rng)
        self._wait(ctx, growth_s)
        ctx.journal("tx", "RHEED STOP")
        for source in ("SR", "RU"):
            ctx.journal("tx", f"SHUTTER {source} CLOSE")
            self.chamber.close_shutter(source.lower())
        return grown

    def _cool_down(self, ctx: InstrumentContext) -> None:
        """Cells and substrate to idle; the film cools in ozone until it can be unloaded."""
        for heater in HEATERS:
            self._ramp(ctx, heater, IDLE_CELSIUS[heater])
        self._wait(ctx, self._seconds_until_substrate_below(UNLOAD_BELOW_C))
        ctx.journal("tx", "OZONE FLOW 0.00")
        self.chamber.set_ozone(0.0)

    def _measure_beams(self, ctx: InstrumentContext, rng: np.random.Generator) -> dict[str, float]:
        """Flux gauge in, background, then each source alone through its shutter, gauge out."""
        chamber = self.chamber
        ctx.journal("tx", "BFM IN")
        chamber.move_gauge(True)
        self._wait(ctx, GAUGE_SETTLE_S)
        background = chamber.pressure()
        readings = {"background_torr": chamber.gauge.read(rng, 0.0, background)}
        self._query(ctx, "BFM P?", f"{readings['background_torr']:.3e}")
        for source in ("sr", "ru"):
            ctx.journal("tx", f"SHUTTER {source.upper()} OPEN")
            chamber.open_shutter(source)
            self._wait(ctx, GAUGE_SETTLE_S)
            gross = chamber.gauge.read(rng, chamber.beam_bep(source), background)
            self._query(ctx, "BFM P?", f"{gross:.3e}")
            ctx.journal("tx", f"SHUTTER {source.upper()} CLOSE")
            chamber.close_shutter(source)
            readings[f"{source}_bep_torr"] = gross - readings["background_torr"]
        ctx.journal("tx", "BFM OUT")
        chamber.move_gauge(False)
        return readings

    def _seconds_until_substrate_below(self, celsius: float) -> float:
        controller = self.chamber.controllers["substrate_temp"]
        if controller.process_value <= celsius:
            return 0.0
        times = np.linspace(0.0, controller.seconds_until_stable(STABLE_WITHIN_K), 400)
        _, process = controller.trajectory(times)
        below = np.nonzero(process <= celsius)[0]
        return float(times[below[0]]) if below.size else float(times[-1])


def best_rrr_over(
    truth: Callable[[Mapping[str, Value]], Mapping[str, float | str]],
    ranges: Mapping[str, tuple[float, float]],
    fixed: Mapping[str, float],
) -> tuple[dict[str, float], float]:
    """The conditions with the highest noise-free RRR over the box `ranges` (with `fixed` held), and
    that RRR. `truth` is `SimulatedMbeSystem.truth`; a wrong phase counts as RRR 0.

    A 21-point grid per parameter finds the basin (phase boundaries make the landscape non-smooth), then
    Nelder-Mead polishes from the best grid point.
    """
    names = list(ranges)
    low = np.array([ranges[n][0] for n in names], dtype=float)
    high = np.array([ranges[n][1] for n in names], dtype=float)

    def rrr_at(unit: np.ndarray) -> float:
        point = low + (high - low) * np.clip(unit, 0.0, 1.0)
        result = truth({**fixed, **dict(zip(names, point.tolist(), strict=True))})
        return float(result.get("rrr", 0.0))

    axes = np.linspace(0.0, 1.0, 21)
    grid = np.stack(np.meshgrid(*[axes] * len(names), indexing="ij"), axis=-1).reshape(-1, len(names))
    start = grid[int(np.argmax([rrr_at(u) for u in grid]))]

    def negative_rrr(unit: np.ndarray) -> float:
        return -rrr_at(unit)

    polished = minimize(
        negative_rrr,
        start,
        method="Nelder-Mead",
        bounds=[(0.0, 1.0)] * len(names),
        options={"xatol": 1e-6, "fatol": 1e-9},
    )
    best = np.clip(polished.x, 0.0, 1.0) if -polished.fun >= rrr_at(start) else start
    point = low + (high - low) * best
    return {**fixed, **dict(zip(names, point.tolist(), strict=True))}, rrr_at(best)
