"""MBE system (oxide growth, e.g. SrRuO3): effusion cells, substrate heater, ozone, shutters.
This module declares the hard limits the driver enforces; the driver itself arrives with the MBE issue.
Limits follow working labs' practice (see shared/DOMAIN.md, MBE): per-cell maximum temperature and
ramp rate, substrate maximum, oxidant flow range."""

from __future__ import annotations

from closedloop.drivers.base import DriverDescription, Limit, SafetyEnvelope

MBE_ENVELOPE = SafetyEnvelope(
    {
        "sr_cell_temp": Limit(min=20.0, max=650.0, unit="degC", max_rate=20.0),
        "ru_cell_temp": Limit(min=20.0, max=2000.0, unit="degC", max_rate=10.0),
        "substrate_temp": Limit(min=20.0, max=900.0, unit="degC", max_rate=30.0),
        "ozone_flow": Limit(min=0.0, max=20.0, unit="sccm"),
        "growth_time": Limit(min=1.0, max=240.0, unit="min"),
    }
)

MBE_DESCRIPTION = DriverDescription(
    name="mbe",
    envelope=MBE_ENVELOPE,
    measures={"rrr": "", "xrd_fwhm": "deg", "growth_rate": "angstrom/s"},
    optional_settings=("growth_time",),
)
