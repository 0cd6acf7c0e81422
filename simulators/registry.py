"""Every simulator, by the name a protocol or the command line uses for it.

Two kinds, one registry each:

- wire emulators (`EMULATORS`): a model of an instrument's command set behind a port. The real driver
  talks to it, in this process through a `sim://MODEL` connection (virtual time) or from another process
  through `closedloop emulate MODEL` on a pty or TCP port. Each one names the driver that speaks its
  wire protocol.
- simulated instruments (`SIMULATED`): a whole instrument in process, no wire, for `driver: sim:NAME`
  (test functions, the fast TRMC and MBE stations, a lookup pool of real data).

Importing this module makes `sim://MODEL?seed=N&faults=SPEC` a URL every driver's transport opens
(`drivers.transport.register_port_scheme`), the way pyserial's URL handlers work: there is one way to
reach an emulator in process. A `sim://` link simulates the whole instrument: `sim://mbe` also brings the
chamber's heater loops as Modbus controllers, which a protocol's Modbus cells then reach in process
whatever their URLs (`simulators.modbus_bank`, `drivers.modbus_client.in_process_controllers`).

Adding a simulator: its model in its own module, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

from pydantic import Field

from closedloop.drivers.base import Clock, Driver, DriverDescription, Limit, SafetyEnvelope
from closedloop.drivers.mbe import MBE_DESCRIPTION, MbeOptions
from closedloop.drivers.options import DriverOptions
from closedloop.drivers.opv_robot import IDENTITY as OPV_ROBOT_IDENTITY
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_simulate import DescribedSimulation
from closedloop.drivers.smu import SMU_DESCRIPTION, SmuOptions
from closedloop.drivers.transport import Port, TransportSettings, register_port_scheme
from closedloop.drivers.trmc import TRMC_DESCRIPTION, TrmcOptions
from closedloop.records import Value
from closedloop.simulators import furnace
from closedloop.simulators.device.settings import DeviceSettings
from closedloop.simulators.device.truth import device_ground_truth
from closedloop.simulators.emulator import EmulatedPort, LineModel, ModelFactory, emulated_port
from closedloop.simulators.line import hotplate
from closedloop.simulators.testfunctions import TEST_FUNCTIONS, FunctionInstrument, FunctionOptions
from closedloop.simulators.truth import GroundTruth, SearchRegion, mbe_ground_truth, trmc_ground_truth

if TYPE_CHECKING:
    import pandas as pd

# A noise-free model: conditions in the instrument's units -> the values it would measure.
Truth = Callable[[Mapping[str, Value]], Mapping[str, Any]]
# The judged quantity and its optimum over a region: ground_truth(options, region, units).
GroundTruthMaker = Callable[[Any, SearchRegion, Mapping[str, str]], GroundTruth]


# ---- wire emulators ------------------------------------------------------------------------------


def _furnace_model(clock: Clock, seed: int) -> LineModel:
    return furnace.FurnaceModel(clock, seed)


def _trmc_model(clock: Clock, seed: int) -> LineModel:
    from closedloop.simulators.trmc.wire import TrmcWireModel  # the film physics: scipy, only when served

    return TrmcWireModel(clock, seed)


def _opv_robot_model(clock: Clock, seed: int) -> LineModel:
    from closedloop.simulators.line.robot import OpvRobotModel  # the film physics: scipy, only when served

    return OpvRobotModel(clock, seed)  # films go to the process's shared ledger, for the line's next steps


def _smu_model(clock: Clock, seed: int) -> LineModel:
    from closedloop.simulators.device.wire import SmuWireModel  # device physics: scipy, only when served

    return SmuWireModel(clock, seed)  # a line's devices come from the process's shared ledger


def _hotplate_model(clock: Clock, seed: int) -> LineModel:
    return hotplate.HotplateModel(clock, seed)


def _mbe_model(clock: Clock, seed: int) -> LineModel:
    from closedloop.simulators.mbe.wire import MbeWireModel

    return MbeWireModel(clock, seed)


def _mbe_controllers(port: EmulatedPort) -> EmulatedPort:
    # pymodbus, which the MBE driver has loaded already; only when a sim://mbe link opens.
    from closedloop.simulators.modbus_bank import with_modbus_controllers

    return with_modbus_controllers(port)


def _trmc_truth(seed: int, options: Any) -> Truth:
    from closedloop.simulators.trmc.station import SimulatedTrmcStation

    return SimulatedTrmcStation(seed=seed, averages=options.averages, wavelength=options.wavelength).truth


def _mbe_truth(seed: int, options: Any) -> Truth:
    from closedloop.simulators.mbe.station import SimulatedMbeSystem

    return SimulatedMbeSystem(seed=seed).truth


def _smu_truth(seed: int, options: Any) -> Truth:
    from closedloop.simulators.device.station import SimulatedDeviceStation

    settings = options.device_settings() if isinstance(options, SimulatedSmuOptions) else None
    return SimulatedDeviceStation(seed=seed, settings=settings).truth


@dataclass(frozen=True)
class WireEmulator:
    """An instrument's command set, served behind a port.

    `driver`: the registered driver that speaks it. `accepts`: what the simulated device itself takes,
    for drivers whose description comes from the protocol (a serial instrument described in YAML), and
    `identity` what it answers to `*IDN?`: a protocol for another instrument must not run against it.
    `truth(seed, options)`: the model without noise, where it has one (dry-run and benchmark checks).
    `beside(port)`: what else the instrument has that its `sim://` link simulates with it (the MBE chamber's
    heater loops as Modbus controllers, `simulators.modbus_bank`), attached to the port it returns.
    """

    name: str
    driver: str
    summary: str
    model: ModelFactory
    accepts: DriverDescription | None = None
    identity: str | None = None
    truth: Callable[[int, Any], Truth] | None = None
    ground_truth: GroundTruthMaker | None = None
    beside: Callable[[EmulatedPort], EmulatedPort] | None = None


EMULATORS: dict[str, WireEmulator] = {
    e.name: e
    for e in (
        WireEmulator(
            "furnace", "serial", "a tube furnace with a four-point probe, speaking SCPI", _furnace_model,
            accepts=DriverDescription(
                name="furnace",
                envelope=SafetyEnvelope({
                    "anneal_temp": Limit(min=-50.0, max=furnace.MAX_TEMP_C, unit="degC"),
                    "anneal_time": Limit(min=0.0, max=furnace.MAX_DWELL_S / 60.0, unit="min"),
                    "gas_flow": Limit(min=0.0, max=furnace.MAX_FLOW_SCCM, unit="sccm"),
                }),
                measures={"sheet_resistance": "ohm", "furnace_temp": "degC"},
            ),
            identity=furnace.IDN,
        ),
        WireEmulator("trmc", "trmc", "the TRMC station's control PC", _trmc_model,
                     truth=_trmc_truth, ground_truth=trmc_ground_truth),
        WireEmulator("smu", "smu", "a Keithley 2400-class SMU under a solar simulator, with a device jig (J-V)",
                     _smu_model, truth=_smu_truth, ground_truth=device_ground_truth),
        WireEmulator("mbe", "mbe", "the MBE growth controller and its chamber", _mbe_model,
                     truth=_mbe_truth, ground_truth=mbe_ground_truth, beside=_mbe_controllers),
        # An OPV line (simulators/line): the robot and the hot plates record each film in the process's
        # shared ledger, from which the TRMC emulator measures it (trmc with sample_from: line).
        WireEmulator("opv_robot", "opv_robot", "the OPV line's coating robot, speaking checksummed sentences",
                     _opv_robot_model, identity=OPV_ROBOT_IDENTITY),
        WireEmulator(
            "hotplate", "serial", "a hot plate of the OPV line, speaking SCPI", _hotplate_model,
            accepts=DriverDescription(
                name="hotplate",
                envelope=SafetyEnvelope({
                    "anneal_temp": Limit(min=20.0, max=hotplate.MAX_TEMP_C, unit="degC"),
                    "anneal_time": Limit(min=0.0, max=hotplate.MAX_TIME_MIN, unit="min"),
                }),
                measures={"plate_temp": "degC"},
            ),
            identity=hotplate.IDN,
        ),
    )
}


def described_emulator(config: SerialInstrumentConfig, title: str) -> WireEmulator:
    """The wire emulator of an instrument its own protocol simulates (a `simulate:` section, see
    `simulators.described`), registered under a `sim://` name of its own so every link reaches it."""
    from closedloop.simulators.described import DescribedInstrument, described_name, noise_free

    if not isinstance(config.simulate, DescribedSimulation):
        raise ValueError("the instrument section has no described simulation (simulate: with measure formulas)")
    name = described_name(config, title)
    if name not in EMULATORS:
        EMULATORS[name] = WireEmulator(
            name, "serial", f"{title}, simulated from its protocol's simulate: section",
            lambda clock, seed: DescribedInstrument(config, clock, seed),
            accepts=config.describe(), identity=config.simulate.identity, truth=noise_free(config))
    return EMULATORS[name]


def emulator(name: str) -> WireEmulator:
    """The wire emulator `name`; KeyError naming the known ones otherwise."""
    try:
        return EMULATORS[name]
    except KeyError:
        raise KeyError(f"no emulated instrument {name!r}; known: {', '.join(sorted(EMULATORS))}") from None


def make_model(name: str, clock: Clock, seed: int = 0) -> LineModel:
    """The command interpreter of emulator `name` on `clock`."""
    return emulator(name).model(clock, seed)


def in_process_port(
    name: str, *, seed: int = 0, faults: str = "", terminator: str = "\r\n", echo: bool = False
) -> EmulatedPort:
    """A port with emulator `name` inside, in this process: the line alone (`sim://NAME` also attaches what
    the instrument has beside it, see `WireEmulator.beside`)."""
    return emulated_port(emulator(name).model, seed=seed, faults=faults, terminator=terminator, echo=echo)


def sim_url(name: str, *, seed: int = 0, faults: str = "") -> str:
    """The connection URL of emulator `name` in process: `sim://trmc?seed=3&faults=no_reply:0.1`."""
    query = f"seed={int(seed)}" + (f"&faults={quote(faults, safe=':,@.')}" if faults else "")
    return f"sim://{name}?{query}"


def emulator_name(url: str | None) -> str | None:
    """The emulator a `sim://NAME[?...]` connection names, or None for any other link."""
    if url is None or not url.startswith("sim://"):
        return None
    return urlsplit(url).netloc or urlsplit(url).path.strip("/") or None


def _open_sim_url(url: str, settings: TransportSettings) -> Port:
    """`sim://NAME?seed=N&faults=SPEC`: the emulator in process, framed the way the driver reads."""
    name = emulator_name(url)
    if name is None:
        raise ValueError(f"connection {url!r}: sim:// needs an emulator name, e.g. sim://furnace")
    query = parse_qs(urlsplit(url).query)
    unknown = sorted(set(query) - {"seed", "faults"})
    if unknown:
        raise ValueError(f"connection {url!r}: unknown setting(s) {unknown}; sim:// takes seed and faults")
    try:
        seed = int(query.get("seed", ["0"])[0])
    except ValueError:
        raise ValueError(f"connection {url!r}: seed must be a whole number") from None
    try:
        entry = emulator(name)
    except KeyError as e:
        raise ValueError(f"connection {url!r}: {e.args[0]}") from None
    # The emulated device answers with the terminator the driver reads up to, so framing matches.
    port = emulated_port(entry.model, seed=seed, faults=query.get("faults", [""])[0],
                         terminator=settings.read_terminator, echo=settings.echo)
    return port if entry.beside is None else entry.beside(port)


register_port_scheme("sim", _open_sim_url)


# ---- simulated instruments -------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationInputs:
    """What a simulated instrument may take from its protocol besides options: a lookup pool reveals
    rows of the candidate table, by the space's parameters, measuring the objectives and constraints."""

    candidates: pd.DataFrame | None = None
    parameters: Sequence[str] = ()
    outputs: Sequence[str] = ()
    units: Mapping[str, str] = field(default_factory=dict)


OptionsT = TypeVar("OptionsT", bound=DriverOptions)


@dataclass(frozen=True)
class SimulatedInstrument(Generic[OptionsT]):
    """A whole instrument in process (`driver: sim:NAME`). `description` None: the protocol describes
    it (a lookup pool accepts what its table holds). `build(seed, options, inputs)` makes one station."""

    name: str
    summary: str
    options: type[OptionsT]
    description: DriverDescription | None
    build: Callable[[int, OptionsT, SimulationInputs], Driver]
    truth: Callable[[int, OptionsT], Truth] | None = None
    ground_truth: GroundTruthMaker | None = None


class SimulatedMbeOptions(MbeOptions):
    """The MBE driver's options (so a protocol switches between `mbe` and `sim:mbe` unchanged), plus the
    chance per growth of a pressure burst that trips the interlock."""

    fault_rate: float = Field(0.0, ge=0.0, le=1.0)


class SimulatedSmuOptions(SmuOptions):
    """The SMU driver's options (so a protocol switches between `smu` and `sim:smu` unchanged), plus the
    device model's settings (simulators/device/model.py): 0 for `proxy_correlation` is the control case
    where TRMC's film signal says nothing about PCE."""

    proxy_correlation: float = Field(0.8, ge=-1.0, le=1.0)
    failure_rate: float = Field(0.1, ge=0.0, le=1.0)
    landscape_seed: int = 0

    def device_settings(self) -> DeviceSettings:
        return DeviceSettings(self.proxy_correlation, self.failure_rate, self.landscape_seed)


def _function(name: str) -> SimulatedInstrument[FunctionOptions]:
    def build(seed: int, options: FunctionOptions, inputs: SimulationInputs) -> Driver:
        return FunctionInstrument(name, seed=seed, **options.model_dump())

    model = TEST_FUNCTIONS[name]
    return SimulatedInstrument(name, f"the {name} test function, with noise and failure modes", FunctionOptions,
                               model.description, build)


def _trmc_station(seed: int, options: TrmcOptions, inputs: SimulationInputs) -> Driver:
    from closedloop.simulators.trmc.station import SimulatedTrmcStation

    if options.sample_from == "line":
        raise ValueError("sim:trmc makes its own films; a line's TRMC step is driver: trmc on sim://trmc")
    return SimulatedTrmcStation(seed=seed, averages=options.averages, wavelength=options.wavelength)


def _mbe_system(seed: int, options: SimulatedMbeOptions, inputs: SimulationInputs) -> Driver:
    from closedloop.simulators.mbe.station import SimulatedMbeSystem

    return SimulatedMbeSystem(seed=seed, fault_rate=options.fault_rate)


def _smu_station(seed: int, options: SimulatedSmuOptions, inputs: SimulationInputs) -> Driver:
    from closedloop.simulators.device.station import SimulatedDeviceStation

    return SimulatedDeviceStation(seed=seed, options=options, settings=options.device_settings())


def _lookup(seed: int, options: DriverOptions, inputs: SimulationInputs) -> Driver:
    from closedloop.simulators.lookup import LookupInstrument

    if inputs.candidates is None:
        raise ValueError("sim:lookup reveals rows of a candidate table: add candidates: {path: FILE.csv}")
    return LookupInstrument(inputs.candidates, inputs.parameters, inputs.outputs, units=inputs.units)


_FUNCTIONS: list[SimulatedInstrument[Any]] = [_function(name) for name in TEST_FUNCTIONS]
SIMULATED: dict[str, SimulatedInstrument[Any]] = {
    s.name: s
    for s in (
        *_FUNCTIONS,
        SimulatedInstrument("trmc", "the TRMC station's physics in process, no wire (fast, for benchmarks)",
                            TrmcOptions, TRMC_DESCRIPTION, _trmc_station, truth=_trmc_truth,
                            ground_truth=trmc_ground_truth),
        SimulatedInstrument("smu", "solar cells made to each recipe and their J-V figures in process, no wire "
                            "(device model settings: proxy_correlation, failure_rate, landscape_seed)",
                            SimulatedSmuOptions, SMU_DESCRIPTION, _smu_station, truth=_smu_truth,
                            ground_truth=device_ground_truth),
        SimulatedInstrument("mbe", "the MBE system's physics in process, no wire (fast, for benchmarks)",
                            SimulatedMbeOptions, MBE_DESCRIPTION, _mbe_system, truth=_mbe_truth,
                            ground_truth=mbe_ground_truth),
        SimulatedInstrument("lookup", "a candidate table of real data: each trial reveals one row's outcome",
                            DriverOptions, None, _lookup),
    )
}


def simulated(name: str) -> SimulatedInstrument[Any]:
    """The simulated instrument `name` (without `sim:`); KeyError naming the known ones otherwise."""
    try:
        return SIMULATED[name]
    except KeyError:
        close = get_close_matches(name, list(SIMULATED), n=1)
        hint = f"did you mean 'sim:{close[0]}'? " if close else ""
        known = ", ".join(f"sim:{n}" for n in sorted(SIMULATED))
        raise KeyError(f"no simulated instrument {name!r}; {hint}known: {known}") from None
