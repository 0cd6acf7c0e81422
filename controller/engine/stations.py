"""Turn a protocol's `instrument` section into the stations the engine dispatches to.

- `driver: serial`: the real serial driver. With `connection: sim://MODEL` (or `--sim`, which means the
  furnace) its port is an emulator in this process and the campaign runs in virtual time; with a device
  path or URL (`/dev/pts/7` from `closedloop emulate furnace --pty`, `socket://HOST:PORT`, `/dev/ttyUSB0`)
  it talks over the real link on the wall clock.
- `driver: trmc`: the TRMC driver (drivers/trmc_driver.py). `sim://trmc` (or `--sim`) puts the station's
  wire emulator in this process, in virtual time; a device path or URL is the real station on the wall
  clock. `driver: sim:trmc` keeps the faster whole-station simulator (no wire) for benchmarks.
- `driver: mbe`: the MBE driver (drivers/mbe_driver.py), the same way: `sim://mbe` (or `--sim`) is the
  chamber's wire emulator in process, in virtual time; a URL is the real growth controller. `driver:
  sim:mbe` keeps the whole-system simulator (simulators/mbe/station.py).
- `sim:<model>` drivers, `sim://<model>` connections and `--sim` for the other drivers run the
  instrument's simulator in process, in virtual time.

`instrument.options.stations: N` runs N simulated stations at once (each with its own simulator);
`instrument.options.faults: SPEC` injects faults (see `simulators.faults`) into an in-process emulator.
"""

from __future__ import annotations

from typing import Any

from closedloop.controller.engine.dispatch import Station
from closedloop.controller.protocol.instruments import emulated_model, serial_instrument_config
from closedloop.controller.protocol.model import Protocol
from closedloop.drivers.mbe_driver import MbeDriver
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.serial_driver import SerialInstrumentDriver
from closedloop.drivers.transport import Port
from closedloop.drivers.trmc_driver import TrmcDriver
from closedloop.simulators.emulator import MODELS as EMULATED_MODELS
from closedloop.simulators.emulator import in_process_port
from closedloop.simulators.faults import FaultSpecError, parse_fault_spec
from closedloop.simulators.lookup import LookupInstrument
from closedloop.simulators.testfunctions import TEST_FUNCTIONS, FunctionInstrument

DEFAULT_SERIAL_MODEL = "furnace"  # what `--sim` puts behind a serial protocol


class InstrumentUnavailable(ValueError):
    """The protocol names an instrument this installation cannot reach: a bad-input error (exit 2)."""


def simulator_model(protocol: Protocol, sim: bool) -> str | None:
    """Which simulator stands in for the instrument, or None to talk to real hardware."""
    driver = protocol.instrument.driver
    if driver.startswith("sim:"):
        return driver.removeprefix("sim:")
    model = emulated_model(protocol.instrument.connection)
    if model:
        return model
    if sim:
        return DEFAULT_SERIAL_MODEL if driver == "serial" else driver
    return None


def make_stations(protocol: Protocol, *, seed: int, sim: bool, connection: str | None = None) -> list[Station]:
    """The stations for `protocol`; `connection` (a device path or pyserial URL, e.g. `--port`) replaces
    the protocol's `instrument.connection`."""
    if connection is not None:
        protocol = with_connection(protocol, connection)
    options = dict(protocol.instrument_options())
    n = int(options.pop("stations", 1))
    model = simulator_model(protocol, sim)
    serial = isinstance(protocol.instrument, SerialInstrumentConfig)
    if protocol.instrument.driver == "trmc":
        names = [f"trmc-{i + 1}" if n > 1 else "trmc" for i in range(n)]
        return [Station(name=name, driver=_trmc_driver(protocol, model, seed, options, n)) for name in names]
    if protocol.instrument.driver == "mbe":
        names = [f"mbe-{i + 1}" if n > 1 else "mbe" for i in range(n)]
        return [Station(name=name, driver=_mbe_driver(protocol, model, seed, options, n)) for name in names]
    if model is None and not serial:
        raise InstrumentUnavailable(
            f"instrument driver {protocol.instrument.driver!r} at {protocol.instrument.connection!r}: live hardware "
            "drivers for it are not part of this release yet; run with --sim to use the instrument's simulator"
        )
    if model is None and n > 1:
        raise InstrumentUnavailable(f"one serial connection drives one station; remove options.stations ({n})")
    name = model or protocol.instrument.driver
    stations = []
    for i in range(n):
        driver = _serial_driver(protocol, model, seed, options) if serial else _simulator(model, protocol, seed, options)
        stations.append(Station(name=f"{name}-{i + 1}" if n > 1 else name, driver=driver))
    return stations


def with_connection(protocol: Protocol, connection: str) -> Protocol:
    """A copy of `protocol` whose instrument talks to `connection` instead of its own `connection:`."""
    if not connection.strip():
        raise InstrumentUnavailable("the instrument connection (--port) is empty; give a device path such as "
                                    "/dev/ttyUSB0 or /dev/pts/5, or a URL such as socket://host:port")
    instrument = protocol.instrument.model_copy(update={"connection": connection.strip()})
    return protocol.model_copy(update={"instrument": instrument})


def _serial_driver(protocol: Protocol, model: str | None, seed: int, options: dict[str, Any]) -> SerialInstrumentDriver:
    """The serial driver on its real link (wall clock), or on an in-process emulator of `model` (virtual time)."""
    config = serial_instrument_config(protocol)
    faults = str(options.get("faults", ""))
    if model is None:
        if faults:
            raise InstrumentUnavailable("options.faults injects faults into an emulator (sim://); remove it for a real instrument")
        try:
            driver = SerialInstrumentDriver(config)
        except ValueError as e:  # a URL pyserial cannot handle
            raise InstrumentUnavailable(str(e)) from None
        driver.virtual_time = False
        return driver
    if model not in EMULATED_MODELS:
        raise InstrumentUnavailable(f"no emulated serial instrument {model!r}; known: {', '.join(sorted(EMULATED_MODELS))}")
    try:
        parse_fault_spec(faults)
    except FaultSpecError as e:
        raise InstrumentUnavailable(f"instrument.options.faults: {e}") from None
    line = config.serial.to_transport()
    # The emulated device answers with the terminator the driver reads up to, so framing matches the protocol.
    port = in_process_port(model, seed=seed, faults=faults, terminator=line.read_terminator, echo=line.echo)
    driver = SerialInstrumentDriver(config, port=port)
    # The transport hands each trial's clock to the emulator (follow_clock): both live in virtual time.
    driver.virtual_time = True
    return driver


def _wire_port(
    model: str | None, expected: str, device: str, emulated: str, seed: int, faults: str, n: int
) -> Port | None:
    """None for a real link (wall clock), else the `expected` emulator in this process (virtual time).
    Faults and several stations only make sense for the emulator."""
    if model is None:
        if faults or n > 1:
            raise InstrumentUnavailable(
                f"options.faults and options.stations apply to the emulated {emulated} (sim://{expected}); "
                "remove them for a real one"
            )
        return None
    if model != expected:
        raise InstrumentUnavailable(
            f"driver {expected} talks to {device}; connection sim://{model} is not one (use sim://{expected})"
        )
    try:
        parse_fault_spec(faults)
    except FaultSpecError as e:
        raise InstrumentUnavailable(f"instrument.options.faults: {e}") from None
    return in_process_port(expected, seed=seed, faults=faults)


def _trmc_driver(protocol: Protocol, model: str | None, seed: int, options: dict[str, Any], n: int) -> TrmcDriver:
    """The TRMC driver on its real link (wall clock), or on the station's in-process emulator (virtual time)."""
    faults = str(options.get("faults", ""))
    options = {k: v for k, v in options.items() if k != "faults"}
    port = _wire_port(model, "trmc", "a TRMC station", "station", seed, faults, n)
    connection = "sim://trmc" if port is not None else (protocol.instrument.connection or "sim://trmc")
    try:
        driver = TrmcDriver(connection, options, port=port)
    except ValueError as e:  # an unknown option, or a URL pyserial cannot handle
        raise InstrumentUnavailable(f"instrument (trmc): {e}") from None
    # In process the transport hands each trial's clock to the emulator: both live in virtual time.
    driver.virtual_time = port is not None
    return driver


def _mbe_driver(protocol: Protocol, model: str | None, seed: int, options: dict[str, Any], n: int) -> MbeDriver:
    """The MBE driver on the growth controller's real link (wall clock), or on the chamber's wire emulator
    in this process (virtual time). `driver: sim:mbe` never gets here: it keeps the whole-system simulator."""
    options = dict(options)  # each station gets its own copy: the caller's is shared by all of them
    faults = str(options.pop("faults", ""))
    port = _wire_port(model, "mbe", "an MBE growth controller", "chamber", seed, faults, n)
    options["connection"] = "sim://mbe" if port is not None else protocol.instrument.connection
    try:
        driver = MbeDriver(options, port=port)
    except (ValueError, TypeError) as e:  # an unknown or unsafe option, or a URL pyserial cannot handle
        raise InstrumentUnavailable(f"instrument (mbe): {e}") from None
    driver.virtual_time = port is not None
    return driver


def _simulator(model: str | None, protocol: Protocol, seed: int, options: dict[str, Any]) -> Any:
    assert model is not None
    driver = _simulated_instrument(model, protocol, seed, options)
    driver.virtual_time = True  # simulators advance only the trial's own clock
    return driver


def _simulated_instrument(model: str, protocol: Protocol, seed: int, options: dict[str, Any]) -> Any:
    if model in TEST_FUNCTIONS:
        rates = {k: float(options[k]) for k in ("noise_sd", "fault_rate", "failure_rate") if k in options}
        return FunctionInstrument(model, seed=seed, **rates)
    if model == "trmc":
        from closedloop.simulators.trmc.station import SimulatedTrmcStation

        kwargs = {k: options[k] for k in ("averages", "wavelength") if k in options}
        return SimulatedTrmcStation(seed=seed, **kwargs)
    if model == "mbe":
        from closedloop.simulators.mbe.station import SimulatedMbeSystem

        return SimulatedMbeSystem(seed=seed, fault_rate=float(options.get("fault_rate", 0.0)))
    if model == "lookup":
        table = protocol.candidates_frame()
        if table is None:
            raise InstrumentUnavailable("sim:lookup needs a `candidates` table in the protocol")
        problem = protocol.to_problem()
        outputs = [o.name for o in problem.objectives] + [
            c.name for c in problem.outcome_constraints if c.name not in {o.name for o in problem.objectives}
        ]
        return LookupInstrument(table, problem.space.names, outputs, units=protocol.objective_units())
    known = [*TEST_FUNCTIONS, "trmc", "mbe", "lookup"]
    raise InstrumentUnavailable(f"no simulator for {model!r} (known: {', '.join(known)})")
