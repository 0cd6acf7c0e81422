"""The oxide-MBE driver: the growth controller's line protocol (see `simulators.mbe.wire`) behind the
`drivers.base.Driver` verbs, with the safety rules of working labs enforced here, below any planner:

- a setpoint outside the envelope's min/max, or a ramp faster than its max_rate, is refused (journaled
  as "REFUSED ..." and raised as `EnvelopeViolation`) before a byte is written; never clamped. Every
  setpoint is preceded by its ramp rate, so a loop never ramps at a rate someone else left behind;
- a growth whose heaters cannot reach their setpoints within `stabilize_timeout_s` at their ramp rates is
  refused the same way, before the first setpoint: arriving in time would need a ramp above max_rate;
- the chamber pressure and the interlock are read before heating anything or opening gas, and the
  interlock before opening any shutter: a bad vacuum refuses the step with `InstrumentFault`;
- watchdog: a lost link (an `InstrumentFault` from the transport) or an `abort()` in the middle of a
  recipe puts the chamber in its safe state: shutters closed, ozone off, heaters ramping to idle at
  rates inside the envelope;
- heaters with their own Modbus controllers (`MbeOptions.cells`) are set through them after the same
  checks, then read back: a controller that disagrees or alarms is a fault (drivers/mbe_modbus.py).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from closedloop.drivers.base import (
    DriverDescription,
    EnvelopeViolation,
    InstrumentContext,
    InstrumentFault,
    Journal,
    Measurement,
    Value,
    require_settings,
)
from closedloop.drivers.mbe import HEATERS, MBE_DESCRIPTION, MBE_ENVELOPE, MbeOptions, check_ramp_rate
from closedloop.drivers.mbe_modbus import ModbusHeaters
from closedloop.drivers.mbe_recipe import (
    ANALYSIS,
    ANALYSIS_VERSION,
    BOLTZMANN_EV_PER_K,
    CELLS,
    REQUIRED,
    SHUTTERS,
    FluxTuning,
    Layer,
    growth_rate_from_rheed,
)
from closedloop.drivers.scpi import decode_block
from closedloop.drivers.transport import Port, SerialTransport, TransportSettings


def _exact(value: float) -> str:
    """A number as written on the wire: every digit, so what was checked is exactly what is sent (a
    rounded rate could land above max_rate)."""
    return repr(float(value))


class MbeDriver:
    """An MBE growth controller (a `drivers.base.Driver`) at `connection` (a device path or URL); `port`
    replaces the link (a test's own port object)."""

    def __init__(
        self, connection: str, options: MbeOptions | Mapping[str, Any] | None = None, *, port: Port | None = None
    ) -> None:
        """`options` as a protocol gives them (validated here: a bad one raises ValueError naming it)."""
        self.connection = connection
        self.options = options if isinstance(options, MbeOptions) else MbeOptions.model_validate(options or {})
        settings = TransportSettings(read_terminator="\r\n", write_terminator="\n", timeout=self.options.timeout_s)
        self.transport = SerialTransport(connection, settings, port=port)
        # Heaters with their own Modbus controllers; one that disagrees or alarms makes the chamber safe.
        self.modbus = ModbusHeaters(self.options.cells, on_fault=self.safe_state, beside=self.transport.port)
        self._ctx: InstrumentContext | None = None
        self._abort = threading.Event()

    # -- Driver protocol -------------------------------------------------------------------------

    def describe(self) -> DriverDescription:
        return MBE_DESCRIPTION

    def check(self, conditions: Mapping[str, Value]) -> None:
        MBE_ENVELOPE.check(conditions)
        require_settings(conditions, REQUIRED, "required by the growth recipe; add it to the protocol's space")

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        """Heat, measure the beams, grow with RHEED, cool, and read the ex-situ results."""
        try:
            self.check(conditions)
        except EnvelopeViolation as e:
            ctx.journal("tx", f"REFUSED {e}")
            raise
        started = ctx.clock.now()
        self._attach(ctx)
        self._abort.clear()
        try:
            return self._grow(conditions, ctx, started)
        except InstrumentFault:
            self.safe_state()  # the watchdog: a growth that cannot go on must not be left hot and open
            raise

    def _grow(self, conditions: Mapping[str, Value], ctx: InstrumentContext, started: float) -> Measurement:
        self.check_ramp_budget(conditions, ctx)
        for heater in HEATERS:
            self.set_temperature(heater, float(conditions[heater]), self.options.ramp_rate[heater], ctx)
        self.wait_until_stable(list(HEATERS), ctx)
        ctx.clock.sleep(self.options.soak_s)
        beams = {f"{cell}_bep_torr": self.measure_bep(cell, ctx) for cell in CELLS}
        self.set_ozone(float(conditions["ozone_flow"]), ctx)
        ctx.clock.sleep(self.options.ozone_settle_s)
        growth_s = float(conditions.get("growth_time", 60.0)) * 60.0
        # RHEED can only watch while the film grows: a capture outlasting a short growth never finishes.
        rheed_s = min(self.options.rheed_s, growth_s)
        rheed_t, rheed = self.run_recipe([Layer(frozenset(SHUTTERS), growth_s)], ctx, rheed_s=rheed_s)
        self.go_idle(ctx)
        ctx.clock.sleep(self.options.ex_situ_s)
        results = self.ex_situ(ctx)
        values = {k: v for k, v in results.items() if isinstance(v, float) and math.isfinite(v)}
        ok = "rrr" in values
        return Measurement(
            values=values,
            units={q: MBE_DESCRIPTION.measures[q] for q in values if q in MBE_DESCRIPTION.measures},
            status="ok" if ok else "failed_sample",
            artifacts={"rheed_t_s": rheed_t, "rheed_intensity": rheed, "beam_flux": beams,
                       "rheed_growth_rate": growth_rate_from_rheed(rheed_t, rheed)},
            analysis=ANALYSIS,
            analysis_version=ANALYSIS_VERSION,
            instrument=self.connection.partition("?")[0],  # the link, without an emulator's seed
            detail="" if ok else str(results.get("phase", "")),
            duration_s=ctx.clock.now() - started,
        )

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        return None  # a film interrupted mid-growth is lost

    def safe_state(self) -> None:
        """Shutters closed, ozone off, flux monitor out, heaters ramping down to idle within max_rate.
        Each step is tried on its own: one failed command must not skip the others. Never raises."""
        for shutter in SHUTTERS:
            self._try(f"SHUT:{shutter} CLOS")
        self._try("OZONE:FLOW 0")
        self._try("BFM OUT")
        self.modbus.go_idle(self.options.idle, self.options.ramp_rate)
        for heater, ctrl in HEATERS.items():
            if heater in self.modbus:
                continue
            idle = self.options.idle[heater]
            with contextlib.suppress(Exception):
                if float(self.transport.query(f"{ctrl}:SP?")) <= idle:
                    continue  # already at or below idle: an abort never heats
            self._try(f"{ctrl}:RATE {_exact(self.options.ramp_rate[heater])}")
            self._try(f"{ctrl}:SP {_exact(idle)}")

    def abort(self) -> None:
        """Stop a recipe in progress (from any thread) and go to the safe state."""
        self._abort.set()
        self.safe_state()

    def set_journal(self, journal: Journal | None) -> None:
        """Journal the link's commands and replies from now on (see `drivers.base.Journaled`)."""
        self.transport.set_journal(journal)
        self.modbus.set_journal(journal)

    def close(self) -> None:
        self.transport.close()
        self.modbus.close()

    # -- verbs -----------------------------------------------------------------------------------

    def set_temperature(self, heater: str, target: float, rate_per_min: float, ctx: InstrumentContext) -> None:
        """Ramp `heater` to `target` degC at `rate_per_min`, refusing a target outside the envelope or a
        rate above its max_rate; heating (target above the present reading) needs a good vacuum."""
        self._attach(ctx)
        try:
            if heater not in HEATERS:
                raise EnvelopeViolation(heater, target, f"not a heater; known: {', '.join(HEATERS)}")
            MBE_ENVELOPE.limits[heater].check(heater, target)
            check_ramp_rate(heater, rate_per_min)
        except EnvelopeViolation as e:
            ctx.journal("tx", f"REFUSED {e}")
            raise
        ctrl = HEATERS[heater]
        if target > self._pv(heater):
            self._require_vacuum(f"heating {heater} to {target:g} degC", for_heat_or_gas=True)
        if heater in self.modbus:
            self.modbus.set(heater, target, rate_per_min)
            return
        self._send(f"{ctrl}:RATE {_exact(rate_per_min)}")
        self._send(f"{ctrl}:SP {_exact(target)}")

    def check_ramp_budget(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> None:
        """Refuse a growth whose heaters cannot reach their setpoints within `stabilize_timeout_s` at their
        ramp rates, before any setpoint is sent: getting there in time would take a ramp faster than the
        loop may run, and waiting would only end in a fault with the cells hot. Judged from the present
        readings (the ramp starts where the heater is, usually idle)."""
        budget_s = self.options.stabilize_timeout_s
        for heater, ctrl in HEATERS.items():
            target = float(conditions[heater])
            start = self._pv(heater)
            rate = float(self.options.ramp_rate[heater])
            needed_s = abs(target - start) / rate * 60.0
            if needed_s <= budget_s:
                continue
            in_time = abs(target - start) / (budget_s / 60.0)
            max_rate = MBE_ENVELOPE.limits[heater].max_rate or math.inf
            fix = (f"raise instrument.options.ramp_rate.{heater} (at most max_rate {max_rate:g})" if in_time <= max_rate
                   else "allow more time (instrument.options.stabilize_timeout_s) or narrow the range")
            reason = (
                f"ramping from {start:g} to {target:g} degC at {rate:g} degC/min takes {needed_s / 60:.0f} min, "
                f"more than the {budget_s / 60:g} min stabilize_timeout_s allows; arriving in time needs "
                f"{in_time:.1f} degC/min (max_rate {max_rate:g}); {fix}"
            )
            ctx.journal("tx", f"REFUSED {ctrl}:SP {_exact(target)}: {reason}")
            raise EnvelopeViolation(heater, target, reason)

    def wait_until_stable(self, heaters: Sequence[str], ctx: InstrumentContext) -> None:
        """Poll each loop's PV until it is within `stable_within_k` of its SP (InstrumentFault on timeout)."""
        deadline = ctx.clock.now() + self.options.stabilize_timeout_s
        while True:
            self._raise_if_aborted()
            self.modbus.verify_all(heaters)  # the controllers' own registers and alarms, every poll
            off = {h: self._pv(h) - self._sp(h) for h in heaters}
            if all(abs(e) <= self.options.stable_within_k for e in off.values()):
                return
            if ctx.clock.now() >= deadline:
                raise InstrumentFault(f"heaters not stable after {self.options.stabilize_timeout_s:g} s: PV-SP {off}")
            ctx.clock.sleep(self.options.poll_s)

    def set_ozone(self, sccm: float, ctx: InstrumentContext) -> None:
        self._attach(ctx)
        try:
            MBE_ENVELOPE.limits["ozone_flow"].check("ozone_flow", sccm)
        except EnvelopeViolation as e:
            ctx.journal("tx", f"REFUSED {e}")
            raise
        if sccm > 0:
            self._require_vacuum(f"opening ozone at {sccm:g} sccm", for_heat_or_gas=True)
        self._send(f"OZONE:FLOW {_exact(sccm)}")

    def set_shutters(self, open_shutters: frozenset[str], ctx: InstrumentContext) -> None:
        """Open exactly `open_shutters` (of SR, RU, MAIN); opening needs the interlock to be OK."""
        self._attach(ctx)
        unknown = set(open_shutters) - set(SHUTTERS)
        if unknown:
            ctx.journal("tx", f"REFUSED shutters {sorted(unknown)}")
            raise EnvelopeViolation("shutters", sorted(unknown), f"no such shutter; known: {', '.join(SHUTTERS)}")
        for shutter in SHUTTERS:
            if shutter not in open_shutters:
                self._send(f"SHUT:{shutter} CLOS")
        if open_shutters:
            self._require_vacuum(f"opening shutters {sorted(open_shutters)}", for_heat_or_gas=False)
        for shutter in SHUTTERS:
            if shutter in open_shutters:
                self._send(f"SHUT:{shutter} OPEN")

    def measure_bep(self, cell: str, ctx: InstrumentContext) -> float:
        """Beam-equivalent pressure (Torr) of `cell` ("sr" or "ru"): gauge in, background with every
        shutter closed, then the cell's shutter alone; the mean of `gauge_readings` readings each."""
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; known: {', '.join(CELLS)}")
        self.set_shutters(frozenset(), ctx)
        self._send("BFM IN")
        try:
            ctx.clock.sleep(self.options.gauge_settle_s)
            background = self._mean_gauge()
            self.set_shutters(frozenset({cell.upper()}), ctx)
            ctx.clock.sleep(self.options.gauge_settle_s)
            gross = self._mean_gauge()
        finally:
            self.set_shutters(frozenset(), ctx)
            self._send("BFM OUT")
        return gross - background

    def tune_flux(self, cell: str, target_bep: float, ctx: InstrumentContext, *,
                  tolerance: float = 0.02, max_iterations: int = 5) -> FluxTuning:
        """Newton steps on the Arrhenius law ln BEP = ln P0 - Ea/(k_B T) until the measured BEP is
        within `tolerance` of `target_bep`; each step stays inside the envelope (or is refused)."""
        if not target_bep > 0:
            raise ValueError(f"target BEP must be > 0 Torr, got {target_bep!r}")
        heater, ea = CELLS[cell], self.options.activation_ev[cell]
        temperature = self._sp(heater)
        steps: list[tuple[float, float]] = []
        for iteration in range(1, max_iterations + 1):
            self.wait_until_stable([heater], ctx)
            bep = self.measure_bep(cell, ctx)
            steps.append((temperature, bep))
            if bep > 0 and abs(bep / target_bep - 1.0) <= tolerance:
                return FluxTuning(temperature, bep, iteration, tuple(steps))
            t_k = temperature + 273.15
            slope = ea / (BOLTZMANN_EV_PER_K * t_k * t_k)  # d ln BEP / dT
            # A cold cell reads ~0: step as if it read a hundredth of the target, never a log of zero.
            temperature = round(temperature + math.log(target_bep / max(bep, target_bep / 100)) / slope, 2)
            if iteration < max_iterations:
                self.set_temperature(heater, temperature, self.options.ramp_rate[heater], ctx)
        raise InstrumentFault(f"{cell} flux did not reach {target_bep:.3e} Torr within {max_iterations} iterations: {steps}")

    def run_recipe(self, layers: Sequence[Layer], ctx: InstrumentContext, *,
                   rheed_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Each layer's shutters for its duration, then every shutter closed; RHEED captured for the
        first `rheed_s` seconds (returns its times and intensities). A lost link or an abort on the way
        puts the chamber in its safe state before the error propagates."""
        self._attach(ctx)
        for layer in layers:
            if not (math.isfinite(layer.duration_s) and layer.duration_s > 0):
                raise EnvelopeViolation("layer duration", layer.duration_s, "must be a positive number of seconds")
        rheed_t, rheed = np.zeros(0), np.zeros(0)
        try:
            for i, layer in enumerate(layers):
                self.set_shutters(layer.open_shutters, ctx)
                if i == 0 and rheed_s > 0:
                    self._send(f"RHEED:CAPT {rheed_s:g}")
                end = ctx.clock.now() + layer.duration_s
                while (left := end - ctx.clock.now()) > 0:
                    self._raise_if_aborted()
                    if self.transport.query("ILCK?") != "OK":
                        raise InstrumentFault("interlock tripped during growth: chamber pressure too high")
                    self.modbus.verify_all()  # a controller's alarm ends the growth too
                    ctx.clock.sleep(min(left, self.options.poll_s * 4))
            self.set_shutters(frozenset(), ctx)
            if rheed_s > 0:
                rheed = decode_block(self.transport.query_block("RHEED:DATA?"), "<f4")
                rheed_t = np.arange(len(rheed)) / self._number("RHEED:RATE?")
        except InstrumentFault:
            self.safe_state()  # the watchdog: whatever broke, leave the chamber harmless
            raise
        return rheed_t, rheed

    def go_idle(self, ctx: InstrumentContext) -> None:
        """End of a growth: heaters above idle down to it at their configured rates, then ozone off.
        A heater below idle stays where it is: heating now would need gas off and a good vacuum."""
        for heater in HEATERS:
            if self._sp(heater) > self.options.idle[heater]:
                self.set_temperature(heater, self.options.idle[heater], self.options.ramp_rate[heater], ctx)
        self.set_ozone(0.0, ctx)

    def ex_situ(self, ctx: InstrumentContext) -> dict[str, float | str]:
        """RRR, XRD FWHM (deg), growth rate (angstrom/s) and phase of the last film (GROW:MEAS?)."""
        self._attach(ctx)
        reply = self.transport.query("GROW:MEAS?")
        fields = dict(part.partition("=")[::2] for part in reply.split(";") if "=" in part)
        if not {"RRR", "FWHM", "RATE"} <= set(fields):
            self._check_errors("GROW:MEAS?")
            raise InstrumentFault(f"GROW:MEAS? answered {reply!r}, expected RRR=..;FWHM=..;RATE=..;PHASE=..")
        return {"rrr": float(fields["RRR"]), "xrd_fwhm": float(fields["FWHM"]),
                "growth_rate": float(fields["RATE"]), "phase": fields.get("PHASE", "")}

    # -- plumbing --------------------------------------------------------------------------------

    def _attach(self, ctx: InstrumentContext) -> None:
        if self._ctx is not ctx:
            self._ctx = ctx
            self.transport.set_journal(ctx.journal)
            self.transport.follow_clock(ctx.clock)
            self.modbus.set_journal(ctx.journal)
        self.transport.open()

    def _pv(self, heater: str) -> float:
        return self.modbus.read_pv(heater) if heater in self.modbus else self._number(f"{HEATERS[heater]}:PV?")

    def _sp(self, heater: str) -> float:
        return self.modbus.read_sp(heater) if heater in self.modbus else self._number(f"{HEATERS[heater]}:SP?")

    def _raise_if_aborted(self) -> None:
        if self._abort.is_set():
            raise InstrumentFault("aborted by the operator; the chamber was put in its safe state")

    def _send(self, command: str) -> None:
        self.transport.write(command)
        self._check_errors(command)

    def _try(self, command: str) -> None:
        with contextlib.suppress(Exception):
            self.transport.write(command)

    def _check_errors(self, after: str) -> None:
        reply = self.transport.query("SYST:ERR?")
        if not reply.startswith("0,"):
            raise InstrumentFault(f"the growth controller refused {after!r}: {reply}")

    def _number(self, query: str) -> float:
        reply = self.transport.query(query)
        try:
            return float(reply)
        except ValueError:
            raise InstrumentFault(f"{query} answered {reply!r}, not a number") from None

    def _mean_gauge(self) -> float:
        return float(np.mean([self._number("BFM:READ?") for _ in range(self.options.gauge_readings)]))

    def _require_vacuum(self, step: str, *, for_heat_or_gas: bool) -> None:
        interlock = self.transport.query("ILCK?")
        pressure = self._number("PRES?")
        limit = self.options.heat_gas_limit_torr
        reason = ("the interlock is TRIPPED" if interlock != "OK"
                  else f"chamber pressure {pressure:.2e} Torr is above {limit:.1e} Torr" if for_heat_or_gas and pressure > limit
                  else "")
        if reason:
            if self._ctx is not None:
                self._ctx.journal("tx", f"REFUSED {step}: {reason}")
            raise InstrumentFault(f"refused {step}: {reason}; pump the chamber down / clear the interlock, then retry")

