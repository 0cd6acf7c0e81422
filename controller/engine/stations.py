"""Turn a protocol's `instrument` section into the stations the engine dispatches to.

Where a station's instrument is, is one of four things, decided here and nowhere else:

- a real link: the driver on its `connection` (a device path, socket://HOST:PORT, or `--port`), on the
  wall clock;
- a wire emulator in this process: `connection: sim://NAME`, or `--sim` for a driver that names its
  emulator in the registry. The real driver and transport talk to the emulator, in virtual time;
- a simulated instrument in this process (`driver: sim:NAME`): no wire, virtual time;
- nowhere: a person runs each trial (`driver: manual`) and answers the driver at the terminal, on the
  wall clock.

`instrument.options.stations: N` runs N stations side by side, `instrument.options.faults: SPEC` injects
faults into an in-process emulator (`simulators.faults`); neither applies to a real instrument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from closedloop.controller.engine.dispatch import Station
from closedloop.controller.protocol.catalog import SIM, instrument
from closedloop.controller.protocol.instruments import emulator_problem, run_by_hand, section_config
from closedloop.controller.protocol.model import Protocol
from closedloop.drivers.base import Driver, DriverEntry
from closedloop.simulators.registry import (
    EMULATORS,
    SimulatedInstrument,
    SimulationInputs,
    Truth,
    WireEmulator,
    emulator_name,
    sim_url,
)


class InstrumentUnavailable(ValueError):
    """The protocol names an instrument this installation cannot reach: a bad-input error (exit 2)."""


@dataclass(frozen=True)
class Link:
    """Where a campaign's instrument is: `url` (None for a simulated instrument, which has no wire), and
    whether it lives in this process (then the campaign runs in virtual time)."""

    url: str | None
    in_process: bool

    @property
    def emulator(self) -> str | None:
        return emulator_name(self.url)


def resolve_link(protocol: Protocol, *, sim: bool = False, connection: str | None = None) -> Link:
    """The link a campaign runs against: `connection` (e.g. `--port`) over the protocol's own; `sim`
    stands the driver's registered emulator in for a real instrument."""
    entry = instrument(protocol.instrument.driver)
    if isinstance(entry, SimulatedInstrument):
        return Link(None, in_process=True)
    if run_by_hand(protocol.instrument):
        if sim or connection is not None:
            raise InstrumentUnavailable(
                f"driver {entry.name}: a person runs each trial, so no simulator stands in for them (--sim, a dry "
                "run) and there is no port (--port); run it without them and enter each result at the prompt")
        return Link(None, in_process=False)  # the operator, on the wall clock
    if connection is not None and not connection.strip():
        raise InstrumentUnavailable("the instrument connection (--port) is empty; give a device path such as "
                                    "/dev/ttyUSB0 or /dev/pts/5, or a URL such as socket://host:port")
    url = connection.strip() if connection is not None else protocol.instrument.connection
    if sim and emulator_name(url) is None:
        if entry.emulator is None:
            raise InstrumentUnavailable(f"driver {entry.name} has no simulator to run --sim against")
        url = f"sim://{entry.emulator}"
    if url is None:
        raise InstrumentUnavailable(f"driver {entry.name} needs a connection (a device path or URL)")
    problem = emulator_problem(entry.name, url, protocol.instrument)
    if problem is not None:
        raise InstrumentUnavailable(f"connection {url}: {problem}")
    return Link(url, in_process=emulator_name(url) is not None)


def make_stations(protocol: Protocol, *, seed: int, sim: bool = False, connection: str | None = None) -> list[Station]:
    """The stations for `protocol` (see the module docstring); `connection` (a device path or pyserial
    URL, e.g. `--port`) replaces the protocol's `instrument.connection`."""
    link = resolve_link(protocol, sim=sim, connection=connection)
    options = protocol.station_options()
    entry = instrument(protocol.instrument.driver)
    if not link.in_process and (options.faults or options.stations > 1):
        raise InstrumentUnavailable(
            "options.faults and options.stations apply to an emulated instrument in this process "
            f"({_emulator_hint(entry)}or --sim); remove them for a real one"
        )
    base = link.emulator or protocol.instrument.driver.removeprefix(SIM)
    names = [f"{base}-{i + 1}" if options.stations > 1 else base for i in range(options.stations)]
    # Each station gets its own driver (and its own emulator or simulator, with the same seed).
    return [Station(name=name, driver=_driver(protocol, entry, link, seed), virtual=link.in_process) for name in names]


def _emulator_hint(entry: DriverEntry[Any] | SimulatedInstrument[Any]) -> str:
    return f"sim://{entry.emulator} " if isinstance(entry, DriverEntry) and entry.emulator else ""


def _driver(protocol: Protocol, entry: DriverEntry | SimulatedInstrument, link: Link, seed: int) -> Driver:
    if isinstance(entry, SimulatedInstrument):
        try:
            return entry.build(seed, protocol.instrument_options(), _simulation_inputs(protocol))
        except ValueError as e:
            raise InstrumentUnavailable(f"instrument ({protocol.instrument.driver}): {e}") from None
    url = link.url or ""  # no link: an instrument run by hand
    if link.emulator is not None:
        url = sim_url(link.emulator, seed=seed, faults=protocol.station_options().faults)
    if entry.section:
        log_scaled = frozenset(o.name for o in protocol.to_problem().objectives if o.log)
        config = section_config(protocol.instrument, protocol.space, log_scaled)
    else:
        config = protocol.instrument_options()
    try:
        return entry.connect(url, config)
    except ValueError as e:  # a URL no transport can open
        raise InstrumentUnavailable(f"instrument ({entry.name}): {e}") from None


def _simulation_inputs(protocol: Protocol) -> SimulationInputs:
    """What a simulated instrument may need from the protocol (a lookup pool: the table and columns)."""
    problem = protocol.to_problem()
    objectives = [o.name for o in problem.objectives]
    outputs = objectives + [c.name for c in problem.outcome_constraints if c.name not in objectives]
    return SimulationInputs(protocol.candidates_frame(), problem.space.names, outputs, protocol.objective_units())


def stand_in(protocol: Protocol) -> WireEmulator | SimulatedInstrument[Any] | None:
    """The simulator that stands in for the protocol's instrument in a dry run or `--sim`: its simulated
    instrument, or its driver's wire emulator; None when there is none."""
    entry = instrument(protocol.instrument.driver)
    if isinstance(entry, SimulatedInstrument):
        return entry
    try:
        name = resolve_link(protocol, sim=True).emulator
    except InstrumentUnavailable:
        return None
    return None if name is None else EMULATORS[name]


def simulator_truth(protocol: Protocol, seed: int) -> Truth | None:
    """The noise-free model of the protocol's instrument (conditions in instrument units -> values), when
    its simulator has one."""
    simulator = stand_in(protocol)
    if simulator is None or simulator.truth is None:
        return None
    return simulator.truth(seed, protocol.instrument_options())
