"""J-V measurement of a solar cell: a Keithley 2400-class source-measure unit (SMU) under a solar
simulator. This module declares what the station accepts, measures and takes as options; the driver is
drivers/smu_driver.py, the analysis drivers/jv_analysis.py, the emulator simulators/device/wire.py.

The solar simulator's shutter hangs on the SMU's digital output (the 2400's Digital I/O port, line 1:
`:SOUR2:TTL 1` opens it, `:SOUR2:TTL 0` closes it), as many labs wire it, so one link runs both.

Two modes, chosen by the option `sample_from` (as for the TRMC station):
- `recipe` (the default): each device is made elsewhere to the trial's process parameters (acceptor_fraction,
  anneal_temp, anneal_time, spin_speed, solvent), all required; the driver hands the recipe to the test jig
  with the trial id (`SAMP:*`, `SAMP:ID`), so the emulator builds that device;
- `line`: the cell comes from a line whose earlier steps made the film; the step takes no process
  parameters, only the sweep settings, and measures the device labelled with the trial id (`SMU_LINE_DESCRIPTION`).

`SAMP:*` are the jig's commands, not Keithley SCPI: a real 2400 answers them with an error; see the driver.

Envelope: the sweep range (reverse bias breaks a cell down, forward bias heats it), the compliance current,
and the lamp-on time per device (light soaking degrades an organic cell): the driver refuses a trial whose
light soak plus both sweeps would keep the shutter open longer than MAX_LAMP_ON_S.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, StrictBool, model_validator

from closedloop.drivers.base import (
    DriverDescription,
    EnvelopeViolation,
    Limit,
    SafetyEnvelope,
    Value,
    require_settings,
)
from closedloop.drivers.options import DriverOptions, Duration, located, quantity_in
from closedloop.drivers.trmc import PROCESS_PARAMETERS, TRMC_ENVELOPE

MAX_LAMP_ON_S = 600.0
LAMP_ON_TIME = Limit(min=0.0, max=MAX_LAMP_ON_S, unit="s")
LINE_CYCLE_S = 0.02  # one power-line cycle at 50 Hz: an integration of nplc cycles per point
SWEEP_SETTINGS = ("sweep_start", "sweep_stop", "sweep_step", "compliance", "light_soak")
# What a J-V measurement stores raw (drivers/jv_analysis.py derives the values from them).
RAW_SWEEPS = ("voltage_forward_V", "current_forward_A", "voltage_reverse_V", "current_reverse_A", "jv_setup")

SMU_ENVELOPE = SafetyEnvelope(
    {
        # The recipe of the device (made elsewhere): the same sample-handling limits as the TRMC station.
        **{name: TRMC_ENVELOPE.limits[name] for name in PROCESS_PARAMETERS},
        "sweep_start": Limit(min=-1.0, max=1.5, unit="V"),
        "sweep_stop": Limit(min=-1.0, max=1.5, unit="V"),
        "sweep_step": Limit(min=0.001, max=0.1, unit="V"),
        "compliance": Limit(min=1e-6, max=0.1, unit="A"),
        "light_soak": Limit(min=0.0, max=MAX_LAMP_ON_S, unit="s"),
    }
)
MEASURES = {"pce": "%", "voc": "V", "jsc": "mA/cm^2", "ff": ""}
SMU_DESCRIPTION = DriverDescription(name="smu", envelope=SMU_ENVELOPE, measures=MEASURES, optional_settings=SWEEP_SETTINGS)
# On a line the device arrives made: a process parameter sent to this step is refused as undeclared.
SMU_LINE_DESCRIPTION = DriverDescription(
    name="smu",
    envelope=SafetyEnvelope({k: v for k, v in SMU_ENVELOPE.limits.items() if k not in PROCESS_PARAMETERS}),
    measures=MEASURES,
    optional_settings=SWEEP_SETTINGS,
)


def sweep_points(start: float, stop: float, step: float) -> int:
    """Points of a staircase sweep from `start` to `stop` (both included) in steps of |step|."""
    return int(round(abs(stop - start) / abs(step))) + 1


class SmuOptions(DriverOptions):
    """`instrument.options` of a J-V protocol: the sweep, the cell, the lamp and the link."""

    sweep_start: quantity_in("V") = -0.2  # type: ignore[valid-type]
    sweep_stop: quantity_in("V") = 1.0  # type: ignore[valid-type]
    sweep_step: quantity_in("V") = 0.01  # type: ignore[valid-type]
    compliance: quantity_in("A") = 0.02  # type: ignore[valid-type]
    cell_area: quantity_in("cm^2") = Field(0.1, gt=0)  # type: ignore[valid-type]  # pixel area (mask)
    lamp_power: quantity_in("mW/cm^2") = Field(100.0, gt=0)  # type: ignore[valid-type]  # AM1.5G
    light_soak: Duration = 60.0  # shutter open before the sweeps: the lamp and the cell stabilise
    source_delay: Duration = Field(0.05, ge=0)  # settling per point before the current is read
    nplc: float = Field(1.0, ge=0.01, le=10)  # integration per point, in power-line cycles
    manual_loading: StrictBool = False  # the operator mounts each device in the jig and confirms
    # recipe: devices made elsewhere to the trial's process parameters; line: the device a line's earlier
    # steps made, labelled with the trial id (see the module docstring).
    sample_from: Literal["recipe", "line"] = "recipe"
    baudrate: int = Field(9600, gt=0)  # the 2400's RS-232 default
    timeout: Duration = Field(2.0, gt=0)  # per reply on the link
    retries: int = Field(2, ge=0)  # extra attempts for queries (never for setters or a sweep's start)
    poll_s: Duration = Field(1.0, gt=0)  # *OPC? polling once an operation's nominal time has passed
    opc_margin_s: Duration = Field(60.0, ge=0)  # how long past its nominal time an operation may run

    @model_validator(mode="after")
    def _inside_the_envelope(self) -> SmuOptions:
        for name in SWEEP_SETTINGS:
            limit, value = SMU_ENVELOPE.limits[name], getattr(self, name)
            try:
                limit.check(name, value)
            except EnvelopeViolation as e:
                raise located(name, f"{name} = {value:g} {limit.unit} is outside the SMU's envelope ({e.reason})") from None
        if not self.sweep_start <= 0.0 < self.sweep_stop:
            raise located("sweep_start", f"the sweep {self.sweep_start:g}..{self.sweep_stop:g} V must start at or below "
                                         "0 V (Jsc) and end above it (Voc)")
        lamp_on = self.lamp_on_time()
        if lamp_on > MAX_LAMP_ON_S:
            raise located("light_soak", f"light soak and both sweeps keep the lamp on {lamp_on:.0f} s, above the "
                                        f"envelope's {MAX_LAMP_ON_S:g} s per device")
        return self

    def sweep_seconds(self, start: float | None = None, stop: float | None = None, step: float | None = None) -> float:
        """How long one sweep takes: points x (source delay + integration)."""
        points = sweep_points(self.sweep_start if start is None else start, self.sweep_stop if stop is None else stop,
                              self.sweep_step if step is None else step)
        return points * (self.source_delay + self.nplc * LINE_CYCLE_S)

    def lamp_on_time(self, light_soak: float | None = None, start: float | None = None, stop: float | None = None,
                     step: float | None = None) -> float:
        """Seconds the shutter stays open for one device: the light soak and a forward and a reverse sweep."""
        soak = self.light_soak if light_soak is None else light_soak
        return soak + 2.0 * self.sweep_seconds(start, stop, step)


def smu_description(options: SmuOptions) -> DriverDescription:
    """What the station accepts in the mode `options.sample_from` chooses."""
    return SMU_LINE_DESCRIPTION if options.sample_from == "line" else SMU_DESCRIPTION


def trial_sweep(options: SmuOptions, conditions: Mapping[str, Value]) -> dict[str, float]:
    """The sweep settings of a trial: its own where it sets them, the options' otherwise."""
    return {name: float(conditions.get(name, getattr(options, name))) for name in SWEEP_SETTINGS}


def check_trial(options: SmuOptions, conditions: Mapping[str, Value]) -> None:
    """Refuse settings outside the envelope, a sweep that does not span 0 V, a lamp-on time above the
    limit and (recipe mode) a trial missing a process parameter: `EnvelopeViolation`, before any I/O."""
    smu_description(options).envelope.check(conditions)
    if options.sample_from == "recipe":
        require_settings(conditions, PROCESS_PARAMETERS, "the device is made to the recipe: add it to the space or as a fixed parameter")
    s = trial_sweep(options, conditions)
    if not s["sweep_start"] <= 0.0 < s["sweep_stop"]:
        raise EnvelopeViolation("sweep_start", s["sweep_start"], f"the sweep must span 0 V (ends at {s['sweep_stop']:g} V)")
    lamp_on = options.lamp_on_time(s["light_soak"], s["sweep_start"], s["sweep_stop"], s["sweep_step"])
    LAMP_ON_TIME.check("lamp_on_time", round(lamp_on, 3))
