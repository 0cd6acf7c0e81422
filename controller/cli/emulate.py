"""`closedloop emulate MODEL...`: serve simulated instruments on real pseudo-terminals or TCP ports.

The first line on stdout says where to connect (`listening on /dev/pts/7` or
`listening on socket://127.0.0.1:5025`); the emulator then serves until SIGTERM or Ctrl-C and exits 0.
Point a protocol's `connection:` at that path to run the real serial driver against the model.

Several models (`closedloop emulate opv_robot hotplate hotplate trmc`) are served from one process, one
line each (`opv_robot listening on /dev/pts/7`), the same model twice as two instruments: the emulators
of a line share the films they make and measure (`simulators.line.ledger`) only inside one process.

`closedloop emulate --protocol FILE --pty` serves whatever stands in for that protocol's instrument in a
dry run: its own `simulate:` section (an instrument the project has no emulator of), or the emulator of
its driver; replies end in the protocol's read terminator unless --terminator says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from types import FrameType

import click

from closedloop.controller.campaign import BadInput
from closedloop.controller.cli.errors import handle_errors
from closedloop.controller.cli.signals import handled_signals
from closedloop.controller.engine.stations import resolve_link
from closedloop.controller.protocol.model import load_protocol
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock, TcpServer
from closedloop.simulators.faults import FaultInjector, FaultSpecError, parse_fault_spec
from closedloop.simulators.mbe.wire import MbeWireModel, WireRecord
from closedloop.simulators.modbus_controller import ModbusEmulator, rack_summary, serve_mbe_rack
from closedloop.simulators.registry import EMULATORS, make_model


def _fault_spec(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_fault_spec(value)
    except FaultSpecError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _terminator(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    # Shells pass "\r\n" as backslash escapes; the instrument sends the control characters.
    decoded = value.encode("ascii").decode("unicode_escape") if "\\" in value else value
    if not decoded:
        raise click.BadParameter('the terminator cannot be empty; use e.g. "\\r\\n" or "\\n"')
    return decoded


@click.command()
@handle_errors
@click.argument("models", metavar="[MODEL...]", nargs=-1, type=click.Choice(sorted(EMULATORS)))
@click.option("--protocol", "protocol_path", type=click.Path(dir_okay=False),
              help="Serve the simulation that stands in for this protocol's instrument (its simulate: section).")
@click.option("--pty", "use_pty", is_flag=True, help="Serve on a new pseudo-terminal (the default).")
@click.option("--tcp", "tcp_port", type=click.IntRange(0, 65535), help="Serve on 127.0.0.1:PORT instead (0: any free port).")
@click.option("--faults", default="", callback=_fault_spec, help="Faults to inject, e.g. 'no_reply:0.1,garbage:0.05,reset:once@5'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the model's noise and the faults.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Emulated seconds per wall second (3600: an hour per second).")
@click.option("--terminator", default=None, callback=_terminator,
              help="Reply terminator [default: \\r\\n, or the protocol's].")
@click.option("--echo", is_flag=True, help="Echo each command line before replying.")
@click.option("--slow-delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds a slow_reply fault holds a reply back.")
@click.option("--unplug-time", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds an unplug fault keeps the port away.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False, writable=True),
              help="Append every setpoint, rate, shutter and gas change the instrument takes to FILE, one JSON "
                   "object a line (t_s in emulated seconds), as it happens: what a driver really did. MBE only.")
@click.option("--modbus-tcp", "modbus_port", type=click.IntRange(0, 65535),
              help="Also serve the chamber's heater loops as Eurotherm controllers on Modbus TCP 127.0.0.1:PORT "
                   "(0: any free port; units 1 Sr cell, 2 Ru cell, 3 substrate; one decimal). MBE only.")
@click.option("--modbus-rtu", is_flag=True, help="The same on Modbus RTU (9600 baud, 8N1) over a new pseudo-terminal.")
def emulate(
    models: tuple[str, ...],
    protocol_path: str | None,
    use_pty: bool,
    tcp_port: int | None,
    faults: str,
    seed: int,
    time_scale: float,
    terminator: str | None,
    echo: bool,
    slow_delay: float,
    unplug_time: float,
    record_path: str | None,
    modbus_port: int | None,
    modbus_rtu: bool,
) -> None:
    """Serve each simulated instrument MODEL (or the one standing in for --protocol's instrument) behind a
    pty or a TCP port until killed."""
    if protocol_path is not None:
        if models:
            raise click.UsageError("give MODEL names or --protocol FILE, not both")
        name, protocol_terminator = _protocol_emulator(protocol_path)
        models, terminator = (name,), terminator or protocol_terminator
    elif not models:
        raise click.UsageError(f"name a MODEL to serve ({', '.join(sorted(EMULATORS))}) or --protocol FILE")
    terminator = terminator or "\r\n"
    if use_pty and tcp_port is not None:
        raise click.UsageError("choose one of --pty and --tcp PORT")
    if tcp_port and len(models) > 1:
        raise click.UsageError(f"--tcp {tcp_port} is one port for {len(models)} models; use --tcp 0 (any free port "
                               "for each) or --pty")
    if record_path is not None and len(models) > 1:
        raise click.UsageError("--record follows one emulator; give one MODEL")
    if modbus_rtu and modbus_port is not None:
        raise click.UsageError("choose one of --modbus-tcp PORT and --modbus-rtu")
    if (modbus_rtu or modbus_port is not None) and models != ("mbe",):
        raise click.UsageError("--modbus-tcp/--modbus-rtu serve the MBE chamber's heater loops; give the one MODEL mbe")
    clock = ScaledClock(time_scale)
    servers: list[PtyServer | TcpServer] = []
    rack: ModbusEmulator | None = None
    for i, model in enumerate(models):
        # The same model twice is two instruments: each its own noise (and faults) from its own seed.
        emulated = make_model(model, clock, seed + i)
        if record_path is not None:
            _record_to(emulated, model, record_path)
        if (modbus_rtu or modbus_port is not None) and isinstance(emulated, MbeWireModel):
            try:
                emulated, rack = serve_mbe_rack(emulated, None if modbus_rtu else modbus_port)
            except OSError as e:
                raise click.ClickException(f"{e}; pick another with --modbus-tcp PORT (or 0)") from None
        injector = FaultInjector(faults, seed=seed + i, slow_delay_s=slow_delay, unplug_s=unplug_time)
        device = Device(emulated, faults=injector, terminator=terminator, echo=echo)
        try:
            servers.append(PtyServer(device) if tcp_port is None else TcpServer(device, tcp_port))
        except OSError as e:
            raise click.ClickException(f"cannot listen on port {tcp_port}: {e}; pick another with --tcp PORT (or 0)") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        for server in servers:
            server.shutdown()

    for model, server in zip(models, servers, strict=True):
        click.echo(f"{model} listening on {server.url}" if len(models) > 1 else f"listening on {server.url}")
    if rack is not None:
        click.echo(f"modbus listening on {rack_summary(rack)}")
    sys.stdout.flush()
    others = [threading.Thread(target=server.serve_forever, name=f"emulate-{i}", daemon=True)
              for i, server in enumerate(servers[1:], start=1)]
    try:
        with handled_signals(stop):
            for thread in others:
                thread.start()
            servers[0].serve_forever()  # on the main thread, which receives the signals
            for thread in others:
                thread.join(timeout=5)
    finally:
        for server in servers:
            server.close()
        if rack is not None:
            rack.close()


def _protocol_emulator(path: str) -> tuple[str, str]:
    """The emulator standing in for the instrument of the protocol at `path`, and the terminator its
    driver reads replies up to."""
    protocol = load_protocol(path)
    if protocol.is_line:
        raise BadInput(f"{path}: a workflow has one instrument per step; serve each step's emulator by its MODEL name")
    link = resolve_link(protocol, sim=True)
    if link.emulator is None:
        what = "pyvisa-sim serves its file itself (simulate.pyvisa_sim)" if link.url else "it has no wire"
        raise BadInput(f"{path}: nothing to serve on a port: {what}; run the protocol with --sim or a dry run instead")
    section = protocol.the_instrument()
    terminator = section.serial.to_transport().read_terminator if isinstance(section, SerialInstrumentConfig) else "\r\n"
    return link.emulator, terminator


def _record_to(emulated: object, model: str, path: str) -> None:
    if not isinstance(emulated, MbeWireModel):
        raise click.UsageError(f"--record: the {model} emulator keeps no record of what it was sent; only mbe does")
    # Line-buffered: a reader sees each record at once, and nothing is lost when the emulator is killed.
    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the emulator's lifetime

    def write(entry: WireRecord) -> None:
        out.write(json.dumps(dataclasses.asdict(entry)) + "\n")

    emulated.on_record = write
