"""The drivers a protocol can name in `instrument.driver`, by name.

Adding a driver: write it in its own module(s) with its envelope and options model, and add one
`DriverEntry` here. Nothing else in the project names a driver. Each entry imports its driver only when
a campaign connects to it, so `closedloop validate` never loads what only a running instrument needs.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from closedloop.drivers.base import Driver, DriverEntry
from closedloop.drivers.manual import MANUAL as MANUAL_NAME
from closedloop.drivers.manual import ManualInstrumentConfig
from closedloop.drivers.mbe import MBE_DESCRIPTION, MbeOptions
from closedloop.drivers.opv_robot import ROBOT_DESCRIPTION, OpvRobotOptions
from closedloop.drivers.serial_config import SerialInstrumentConfig
from closedloop.drivers.smu import SmuOptions, smu_description
from closedloop.drivers.trmc import TrmcOptions, trmc_description


def _serial(connection: str, config: SerialInstrumentConfig) -> Driver:
    from closedloop.drivers.serial_driver import SerialInstrumentDriver

    return SerialInstrumentDriver(config.model_copy(update={"connection": connection}))


def _trmc(connection: str, options: TrmcOptions) -> Driver:
    from closedloop.drivers.trmc_driver import TrmcDriver  # scipy, for the transient analysis

    return TrmcDriver(connection, options)


def _smu(connection: str, options: SmuOptions) -> Driver:
    from closedloop.drivers.smu_driver import SmuDriver

    return SmuDriver(connection, options)


def _opv_robot(connection: str, options: OpvRobotOptions) -> Driver:
    from closedloop.drivers.opv_robot_driver import OpvRobotDriver

    return OpvRobotDriver(connection, options)


def _mbe(connection: str, options: MbeOptions) -> Driver:
    from closedloop.drivers.mbe_driver import MbeDriver

    return MbeDriver(connection, options)


def _manual(connection: str, config: ManualInstrumentConfig) -> Driver:
    from closedloop.drivers.manual_driver import ManualDriver

    return ManualDriver(config)  # a person: there is nothing to connect to


SERIAL = DriverEntry(
    name="serial",
    summary="a generic serial/SCPI instrument described in the protocol (set, start, wait, measure, envelope)",
    config=SerialInstrumentConfig,
    describe=SerialInstrumentConfig.describe,
    connect=_serial,
    emulator="furnace",
    section=True,
)
TRMC = DriverEntry(
    name="trmc",
    summary="TRMC station: spin-coat, anneal, microwave photoconductance transient (sample_from: line: "
            "measure the film a line made)",
    config=TrmcOptions,
    describe=trmc_description,
    connect=_trmc,
    emulator="trmc",
)
SMU = DriverEntry(
    name="smu",
    summary="J-V of a solar cell: a Keithley 2400-class SMU under a solar simulator; PCE, Voc, Jsc, FF "
            "(sample_from: line: measure the device a line made)",
    config=SmuOptions,
    describe=smu_description,
    connect=_smu,
    emulator="smu",
)
MBE = DriverEntry(
    name="mbe",
    summary="oxide MBE growth controller: cells, substrate, ozone, shutters, RHEED, ex-situ results",
    config=MbeOptions,
    describe=lambda options: MBE_DESCRIPTION,
    connect=_mbe,
    emulator="mbe",
)
OPV_ROBOT = DriverEntry(
    name="opv_robot",
    summary="OPV line coating robot: mix a donor:acceptor blend, spin-coat it, measure the film's thickness",
    config=OpvRobotOptions,
    describe=lambda options: ROBOT_DESCRIPTION,
    connect=_opv_robot,
    emulator="opv_robot",
)

MANUAL = DriverEntry(
    name=MANUAL_NAME,
    summary="measured by hand: a person runs each trial and types the measured values (measures: {NAME: UNIT})",
    config=ManualInstrumentConfig,
    describe=ManualInstrumentConfig.describe,
    connect=_manual,
    section=True,
)

DRIVERS: dict[str, DriverEntry[Any]] = {entry.name: entry for entry in (SERIAL, TRMC, SMU, MBE, OPV_ROBOT, MANUAL)}


def driver_entry(name: str) -> DriverEntry[Any]:
    """The registered driver `name`; KeyError naming the known ones (and the closest) otherwise."""
    try:
        return DRIVERS[name]
    except KeyError:
        close = get_close_matches(name, list(DRIVERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KeyError(f"unknown driver {name!r}; {hint}known drivers: {', '.join(sorted(DRIVERS))}") from None
