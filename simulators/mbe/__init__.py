"""Oxide MBE (SrRuO3) simulator: effusion-cell and chamber physics in virtual time, a growth-outcome
model (RRR, XRD FWHM, growth rate, RHEED), and `SimulatedMbeSystem`, the in-process driver."""

from closedloop.simulators.mbe.station import EXAMPLE_FIXED, EXAMPLE_RANGES, SimulatedMbeSystem

__all__ = ["EXAMPLE_FIXED", "EXAMPLE_RANGES", "SimulatedMbeSystem"]
