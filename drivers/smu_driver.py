"""The J-V station driver: a Keithley 2400-class SMU under a solar simulator, over a serial link (see
drivers/smu.py for the options and the envelope, simulators/device/wire.py for the command set).

A trial: identify, reset to a known state (`*RST`, shutter closed, output off), hand the device's label
(and in recipe mode its recipe) to the jig and mount it (`SAMP:LOAD`; with `manual_loading: true` the
operator confirms first), configure a voltage-source / current-measure staircase sweep with the
compliance, open the shutter for the light soak, turn the output on and run a forward and then a reverse
sweep, then output off and shutter closed whatever happened. Each sweep is started with `:INIT`, awaited
by sleeping its nominal time on the trial's clock and polling `*OPC?`, and read with `:FETC?`: unlike
`:READ?` (which starts a new sweep), a lost `:FETC?` reply can be asked again. The raw sweeps are stored
as artifacts and analyzed by drivers/jv_analysis.py, so a later analysis version can recompute them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import (
    Clock,
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Measurement,
    Value,
)
from closedloop.drivers.jv_analysis import analyze_to_measurement
from closedloop.drivers.scpi import ScpiParseError, parse_list
from closedloop.drivers.scpi_station import ScpiStation
from closedloop.drivers.smu import (
    PROCESS_PARAMETERS,
    SmuOptions,
    check_trial,
    smu_description,
    sweep_points,
    trial_sweep,
)
from closedloop.drivers.transport import Port

log = logging.getLogger(__name__)

LOAD_S = 60.0  # mount the device in the jig and contact the pixel
LINE_LOAD_S = 270.0  # on a line: fetch the device, through the antechamber, mount it
SHUTTER_OPEN = ":SOUR2:TTL 1"
SHUTTER_CLOSED = ":SOUR2:TTL 0"
_RECIPE_COMMANDS = {
    "acceptor_fraction": "SAMP:ACC {:.4f}",
    "anneal_temp": "SAMP:TEMP {:.2f}",
    "anneal_time": "SAMP:TIME {:.3f}",
    "spin_speed": "SAMP:SPIN {:.0f}",
    "solvent": "SAMP:SOLV {}",
}


class SmuDriver(ScpiStation):
    """The J-V station over its link: a device path, socket://HOST:PORT, or an in-process `port`."""

    name = "the SMU"
    error_query = ":SYST:ERR?"

    def __init__(
        self, connection: str, options: SmuOptions | Mapping[str, Any] | None = None, *, port: Port | None = None
    ) -> None:
        """`options` as a protocol gives them (validated here: a bad one raises ValueError naming it)."""
        self.options = options if isinstance(options, SmuOptions) else SmuOptions.model_validate(options or {})
        opts = self.options
        super().__init__(connection, baudrate=opts.baudrate, timeout=opts.timeout, retries=opts.retries,
                         poll_s=opts.poll_s, opc_margin_s=opts.opc_margin_s, port=port)
        self.on_line = self.options.sample_from == "line"

    def describe(self) -> DriverDescription:
        return smu_description(self.options)

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse a trial the station must not run, before any I/O (see `drivers.smu.check_trial`)."""
        check_trial(self.options, conditions)

    # -- one trial -------------------------------------------------------------------------------

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        opts, s = self.options, trial_sweep(self.options, conditions)
        started = ctx.clock.now()
        self.transport.set_journal(ctx.journal)
        self.transport.follow_clock(ctx.clock)
        self._identify()
        self._send_all(["*RST", "*CLS", SHUTTER_CLOSED, ":OUTP OFF"])
        recipe = [] if self.on_line else [_RECIPE_COMMANDS[name].format(conditions[name]) for name in PROCESS_PARAMETERS]
        self._send_all([*recipe, f"SAMP:ID {ctx.trial_id}"])
        if opts.manual_loading:
            ctx.confirm(f"mount the device of trial {ctx.trial_id} in the J-V jig and confirm")
        self._operation("SAMP:LOAD", LINE_LOAD_S if self.on_line else LOAD_S, ctx.clock)
        self._send_all([
            ":SOUR:FUNC VOLT", ":SOUR:VOLT:MODE SWE", ':SENS:FUNC "CURR"', f":SENS:CURR:PROT {s['compliance']:.6E}",
            f":SENS:CURR:NPLC {opts.nplc:g}", f":SOUR:DEL {opts.source_delay:.4f}", ":FORM:ELEM VOLT,CURR",
        ])
        sweeps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        try:
            self._send_all([SHUTTER_OPEN])
            ctx.clock.sleep(s["light_soak"])
            self._send_all([":OUTP ON"])
            sweeps["forward"] = self._run_sweep(s["sweep_start"], s["sweep_stop"], s["sweep_step"], ctx.clock)
            sweeps["reverse"] = self._run_sweep(s["sweep_stop"], s["sweep_start"], s["sweep_step"], ctx.clock)
        finally:
            self.safe_state()
        artifacts: dict[str, Any] = {
            "jv_setup": {"area_cm2": opts.cell_area, "lamp_power_mW_cm2": opts.lamp_power, "compliance_A": s["compliance"]},
        }
        for direction, (voltage, current) in sweeps.items():
            artifacts[f"voltage_{direction}_V"], artifacts[f"current_{direction}_A"] = voltage, current
        try:
            return analyze_to_measurement(artifacts, instrument=self.instrument_id, duration_s=ctx.clock.now() - started)
        except ValueError as e:
            raise InstrumentFault(f"the SMU's sweeps cannot be analyzed: {e}") from None

    def _run_sweep(self, start: float, stop: float, step: float, clock: Clock) -> tuple[np.ndarray, np.ndarray]:
        """One staircase sweep from `start` to `stop`: (voltage in V, current in A) as the SMU read them."""
        points = sweep_points(start, stop, step)
        signed_step = math.copysign(abs(step), stop - start)
        self._send_all([f":SOUR:VOLT:STAR {start:.4f}", f":SOUR:VOLT:STOP {stop:.4f}",
                        f":SOUR:VOLT:STEP {signed_step:.4f}", f":TRIG:COUN {points}"])
        self._operation(":INIT", self.options.sweep_seconds(start, stop, step), clock)
        reply = self.transport.query(":FETC?")
        try:
            numbers = np.array(parse_list(reply))
        except ScpiParseError as e:
            raise InstrumentFault(f":FETC?: {e}") from None
        if numbers.size != 2 * points or not np.all(np.isfinite(numbers)):
            raise InstrumentFault(f":FETC? returned {numbers.size} numbers for a {points}-point sweep "
                                  f"(expected {2 * points} finite voltage,current values)")
        self._check_errors(":FETC?")
        return numbers[0::2], numbers[1::2]

    # -- after a trial ---------------------------------------------------------------------------

    def safe_state(self) -> None:
        """Output off, then the shutter closed. Failures are logged, never raised."""
        for command in (":OUTP OFF", SHUTTER_CLOSED):
            try:
                self.transport.write(command)
            except Exception as e:  # safe_state must never raise, whatever the link does
                log.warning("safe_state: %s on %s failed: %s", command, self.connection, e)
