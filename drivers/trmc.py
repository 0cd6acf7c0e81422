"""TRMC station: sample preparation (spin-coat + anneal) followed by a time-resolved microwave
conductivity measurement. This module declares what the station accepts, measures and takes as options,
and registers the driver (drivers/trmc_driver.py talks to the station).

Two modes, chosen by the option `sample_from`:
- `recipe` (the default): the station makes each film itself from the trial's process parameters
  (acceptor_fraction, anneal_temp, anneal_time, spin_speed, solvent), all required;
- `line`: the station is the last step of a line (a coating robot and a hot plate made the film). It
  takes no process parameters, only the excitation and acquisition settings, and measures the film
  labelled with the trial id (`TRMC_LINE_DESCRIPTION`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool, model_validator

from closedloop.drivers.base import (
    DriverDescription,
    EnvelopeViolation,
    Limit,
    SafetyEnvelope,
)
from closedloop.drivers.options import DriverOptions, Duration, located, quantity_in

SOLVENTS = ("chlorobenzene", "o-dichlorobenzene", "chloroform", "toluene")

TRMC_ENVELOPE = SafetyEnvelope(
    {
        # Sample handling step (spin coater + hot plate).
        "acceptor_fraction": Limit(min=0.0, max=1.0, unit=""),
        "anneal_temp": Limit(min=20.0, max=250.0, unit="degC"),  # hot plate in a glovebox
        "anneal_time": Limit(min=0.0, max=120.0, unit="min"),
        "spin_speed": Limit(min=500.0, max=6000.0, unit="rpm"),
        "solvent": Limit(allowed=SOLVENTS),
        # Excitation and acquisition.
        "wavelength": Limit(min=300.0, max=1100.0, unit="nm"),  # OPO tuning range
        "fluence": Limit(min=1e12, max=1e16, unit="1/cm^2"),  # photons per cm^2 per pulse
        "averages": Limit(min=1, max=1024, unit=""),
    }
)

TRMC_DESCRIPTION = DriverDescription(
    name="trmc",
    envelope=TRMC_ENVELOPE,
    measures={"phi_sum_mu_max": "cm^2/(V*s)", "tau_half": "ns"},
    optional_settings=("wavelength", "fluence", "averages"),
)
PROCESS_PARAMETERS = ("acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent")
# On a line the film arrives made: a process parameter sent to this step is refused as undeclared.
TRMC_LINE_DESCRIPTION = DriverDescription(
    name="trmc",
    envelope=SafetyEnvelope({k: v for k, v in TRMC_ENVELOPE.limits.items() if k not in PROCESS_PARAMETERS}),
    measures=TRMC_DESCRIPTION.measures,
    optional_settings=TRMC_DESCRIPTION.optional_settings,
)


# How CURV? sends the record: INT16/FLOAT32 as an IEEE-488.2 binary block, ASCII as one line of
# comma-separated values (what text-only links such as a pyvisa-sim file can carry; ~7x the bytes of
# INT16, so a slow serial link may need a longer `timeout`).
WordFormat = Annotated[Literal["INT16", "FLOAT32", "ASCII"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]


class TrmcOptions(DriverOptions):
    """`instrument.options` of a TRMC protocol: acquisition defaults and link settings."""

    averages: int = 64
    wavelength: quantity_in("nm") = 500.0  # type: ignore[valid-type]
    fluence: quantity_in("1/cm^2") = 3e14  # type: ignore[valid-type]  # photons/cm^2 per pulse
    manual_loading: StrictBool = False  # the operator puts each film into the cavity and confirms
    # recipe: the station makes each film from the trial's process parameters; line: it measures the film
    # a line's earlier steps made, labelled with the trial id (see the module docstring).
    sample_from: Literal["recipe", "line"] = "recipe"
    word_format: WordFormat = "INT16"  # samples of CURV? (see WordFormat)
    baudrate: int = Field(115200, gt=0)
    timeout: Duration = Field(2.0, gt=0)  # per reply on the link
    retries: int = Field(2, ge=0)  # extra attempts for queries (never for setters or starts)
    poll_s: Duration = Field(1.0, gt=0)  # *OPC? polling once an operation's nominal time has passed
    opc_margin_s: Duration = Field(60.0, ge=0)  # how long past its nominal time an operation may run

    @model_validator(mode="after")
    def _inside_the_envelope(self) -> TrmcOptions:
        for name in ("averages", "wavelength", "fluence"):
            limit, value = TRMC_ENVELOPE.limits[name], getattr(self, name)
            try:
                limit.check(name, value)
            except EnvelopeViolation as e:
                shown = f"{value:g} {limit.unit}".rstrip()
                raise located(name, f"{name} = {shown} is outside the station's envelope ({e.reason})") from None
        return self



def trmc_description(options: TrmcOptions) -> DriverDescription:
    """What the station accepts in the mode `options.sample_from` chooses."""
    return TRMC_LINE_DESCRIPTION if options.sample_from == "line" else TRMC_DESCRIPTION
