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
from closedloop.controller.protocol.instruments import (
    emulator_problem,
    run_by_hand,
    section_config,
    serial_instrument_config,
)
from closedloop.controller.protocol.model import Protocol
from closedloop.drivers.base import Driver, DriverEntry
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_simulate import PyvisaSimFile
from closedloop.drivers.transfer import TransferDriver
from closedloop.simulators.registry import (
    EMULATORS,
    SimulatedInstrument,
    SimulationInputs,
    Truth,
    WireEmulator,
    described_emulator,
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
    stands the driver's registered emulator in for a real instrument. A line is in process when every
    step's instrument is (they share one clock), on the wall clock when none is."""
    if protocol.is_line:
        if connection is not None:
            raise InstrumentUnavailable("--port names one instrument's connection; each step of a workflow has its "
                                        "own: set workflow.STEP.instrument.connection")
        links = [resolve_link(protocol.step_view(step), sim=sim) for step in protocol.steps() if step.instrument]
        if len({link.in_process for link in links}) > 1:
            raise InstrumentUnavailable("the workflow mixes simulated steps (sim://, in virtual time) with real "
                                        "instruments (on the wall clock); run every step simulated (--sim) or real")
        return Link(None, in_process=all(link.in_process for link in links))
    entry = instrument(protocol.the_instrument().driver)
    if isinstance(entry, SimulatedInstrument):
        return Link(None, in_process=True)
    if run_by_hand(protocol.the_instrument()):
        if sim or connection is not None:
            raise InstrumentUnavailable(
                f"driver {entry.name}: a person runs each trial, so no simulator stands in for them (--sim, a dry "
                "run) and there is no port (--port); run it without them and enter each result at the prompt")
        return Link(None, in_process=False)  # the operator, on the wall clock
    if connection is not None and not connection.strip():
        raise InstrumentUnavailable("the instrument connection (--port) is empty; give a device path such as "
                                    "/dev/ttyUSB0 or /dev/pts/5, or a URL such as socket://host:port")
    url = connection.strip() if connection is not None else protocol.the_instrument().connection
    if sim and emulator_name(url) is None:
        own = _own_simulation(protocol)
        if own is not None:
            return own
        if entry.emulator is None:
            raise InstrumentUnavailable(f"driver {entry.name} has no simulator to run --sim against")
        url = f"sim://{entry.emulator}"
        foreign = emulator_problem(entry.name, url, protocol.the_instrument())
        if foreign is not None and isinstance(protocol.the_instrument(), SerialInstrumentConfig):
            raise InstrumentUnavailable(f"no simulator exists for this instrument: {foreign}. {_SIMULATE_HINT}")
    if url is None:
        raise InstrumentUnavailable(f"driver {entry.name} needs a connection (a device path or URL)")
    problem = emulator_problem(entry.name, url, protocol.the_instrument())
    if problem is not None:
        raise InstrumentUnavailable(f"connection {url}: {problem}")
    return Link(url, in_process=emulator_name(url) is not None)


_SIMULATE_HINT = (
    "Or give its protocol a simulation of its own: a `simulate:` section under `instrument:` (the reply to the "
    "identify query, how long a run takes, each measured quantity as a formula of the setpoints, e.g. "
    "simulate: {identity: \"MAKER,MODEL\", process_time: 10 min, measure: {QUANTITY: \"2 * PARAM + 1\"}}), "
    "or a pyvisa-sim device file: simulate: {pyvisa_sim: FILE.yaml, resource: \"ASRL1::INSTR\"}"
)


def _own_simulation(protocol: Protocol) -> Link | None:
    """The link to the simulation a serial instrument's protocol describes (`simulate:`), in this process
    and virtual time; None when it describes none."""
    section = protocol.the_instrument()
    if not isinstance(section, SerialInstrumentConfig) or section.simulate is None:
        return None
    simulation = section.simulate
    if isinstance(simulation, PyvisaSimFile):
        path = protocol.beside_file(simulation.pyvisa_sim)
        if not path.is_file():
            raise InstrumentUnavailable(f"instrument.simulate.pyvisa_sim: no such file {str(path)!r}; give the path "
                                        "of a pyvisa-sim device file, relative to the protocol")
        resource = simulation.resource or (section.connection.removeprefix("visa://").partition("?")[0]
                                           if section.connection.startswith("visa://") else None)
        if not resource:
            raise InstrumentUnavailable("instrument.simulate.resource: name the resource of the pyvisa-sim file "
                                        "to open, e.g. resource: \"ASRL1::INSTR\"")
        return Link(f"visa://{resource}?sim={path.resolve()}", in_process=True)
    config = serial_instrument_config(section, protocol.space)
    return Link(f"sim://{described_emulator(config, protocol.name).name}", in_process=True)


def make_stations(protocol: Protocol, *, seed: int, sim: bool = False, connection: str | None = None) -> list[Station]:
    """The stations for `protocol` (see the module docstring); `connection` (a device path or pyserial
    URL, e.g. `--port`) replaces the protocol's `instrument.connection`. A line gets each step's
    stations, built as a protocol of that step's instrument alone (`Protocol.step_view`)."""
    if protocol.is_line:
        return _line_stations(protocol, seed=seed, sim=sim, connection=connection)
    link = resolve_link(protocol, sim=sim, connection=connection)
    options = protocol.station_options()
    entry = instrument(protocol.the_instrument().driver)
    if not link.in_process and (options.faults or options.stations > 1):
        raise InstrumentUnavailable(
            "options.faults and options.stations apply to an emulated instrument in this process "
            f"({_emulator_hint(entry)}or --sim); remove them for a real one"
        )
    base = link.emulator or protocol.the_instrument().driver.removeprefix(SIM)
    names = [f"{base}-{i + 1}" if options.stations > 1 else base for i in range(options.stations)]
    # Each station gets its own driver (and its own emulator or simulator, with the same seed).
    return [Station(name=name, driver=_driver(protocol, entry, link, seed), virtual=link.in_process) for name in names]


def _line_stations(protocol: Protocol, *, seed: int, sim: bool, connection: str | None) -> list[Station]:
    resolve_link(protocol, sim=sim, connection=connection)  # refuses --port and a line half simulated
    steps = protocol.steps()
    stations: list[Station] = []
    for step in steps:
        if step.instrument is None:
            continue
        for i, name in enumerate(step.station_names()):
            view = protocol.step_view(step, i)
            link = resolve_link(view, sim=sim)
            if step.stations > 1 and not link.in_process and not step.connections:
                raise InstrumentUnavailable(
                    f"workflow.{step.name}: stations: {step.stations} real instruments need one connection each: "
                    f"give workflow.{step.name}.connections: [PORT, ...] (sim:// or --sim emulates each)")
            entry = instrument(view.the_instrument().driver)
            stations.append(Station(name, _driver(view, entry, link, seed), virtual=link.in_process, step=step.index))
    in_process = all(station.virtual for station in stations)
    for step in steps:
        if step.instrument is None:
            to_step = steps[step.index + 1].name if step.index + 1 < len(steps) else "the end of the line"
            driver = TransferDriver(step.transfer or "robot", step.duration_s, to_step, simulated=in_process)
            stations += [Station(name, driver, virtual=in_process, step=step.index) for name in step.station_names()]
    return sorted(stations, key=lambda station: station.step)


def _emulator_hint(entry: DriverEntry[Any] | SimulatedInstrument[Any]) -> str:
    return f"sim://{entry.emulator} " if isinstance(entry, DriverEntry) and entry.emulator else ""


def _driver(protocol: Protocol, entry: DriverEntry | SimulatedInstrument, link: Link, seed: int) -> Driver:
    if isinstance(entry, SimulatedInstrument):
        try:
            return entry.build(seed, protocol.instrument_options(), _simulation_inputs(protocol))
        except ValueError as e:
            raise InstrumentUnavailable(f"instrument ({protocol.the_instrument().driver}): {e}") from None
    url = link.url or ""  # no link: an instrument run by hand
    if link.emulator is not None:
        url = sim_url(link.emulator, seed=seed, faults=protocol.station_options().faults)
    if entry.section:
        log_scaled = frozenset(name for name, spec in protocol.objectives.items() if spec.log)
        config = section_config(protocol.the_instrument(), protocol.space, log_scaled)
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
    instrument, or its driver's wire emulator; None when there is none (a line has one per step)."""
    if protocol.is_line:
        return None
    entry = instrument(protocol.the_instrument().driver)
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
