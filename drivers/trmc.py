"""TRMC station: sample preparation (spin-coat + anneal) followed by a time-resolved microwave
conductivity measurement. This module declares what the station accepts and measures; the driver
that talks to it over the wire arrives with the TRMC issue."""

from __future__ import annotations

from closedloop.drivers.base import DriverDescription, Limit, SafetyEnvelope

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
