"""The TRMC station in simulation: transient physics, a process model with a known optimum, and an
in-process station behind the Driver interface."""

from closedloop.simulators.trmc.physics import (
    Acquisition,
    Cavity,
    Excitation,
    Film,
    SimulatedTransient,
    simulate_transient,
)
from closedloop.simulators.trmc.process import SearchBox, TrmcProcessModel, example_protocol_constraint
from closedloop.simulators.trmc.station import SimulatedTrmcStation

__all__ = [
    "Acquisition",
    "Cavity",
    "Excitation",
    "Film",
    "SearchBox",
    "SimulatedTransient",
    "SimulatedTrmcStation",
    "TrmcProcessModel",
    "example_protocol_constraint",
    "simulate_transient",
]
