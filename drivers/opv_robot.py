"""The OPV line's solution-handling and spin-coating robot: what it accepts (a blend, a solvent from its
rack and a spin speed), what it measures (the film's thickness, by its built-in profilometer) and its
options. The driver (drivers/opv_robot_driver.py) speaks the robot's checksummed sentences
(`drivers.nmea`; the command set is in simulators/line/robot.py)."""

from __future__ import annotations

from pydantic import Field

from closedloop.drivers.base import DriverDescription, Limit, SafetyEnvelope
from closedloop.drivers.options import DriverOptions, Duration
from closedloop.drivers.trmc import SOLVENTS

IDENTITY = "OPVBOT,SC-200,SN042,2.1"  # what $ID answers (model, serial number, firmware)
FRACTION_RANGE = (0.0, 1.0)
SPIN_RANGE = (500.0, 6000.0)  # rpm
COAT_S = 120.0  # one film: mix + dispense 20 s, spin 60 s, dry 25 s, profilometer scan 15 s

ROBOT_ENVELOPE = SafetyEnvelope(
    {
        "acceptor_fraction": Limit(min=FRACTION_RANGE[0], max=FRACTION_RANGE[1], unit=""),
        "solvent": Limit(allowed=SOLVENTS),  # the solution rack
        "spin_speed": Limit(min=SPIN_RANGE[0], max=SPIN_RANGE[1], unit="rpm"),
    }
)
ROBOT_DESCRIPTION = DriverDescription(name="opv_robot", envelope=ROBOT_ENVELOPE, measures={"thickness": "nm"})


class OpvRobotOptions(DriverOptions):
    """`instrument.options` of the coating robot: link settings and how long a coat may overrun."""

    baudrate: int = Field(115200, gt=0)
    timeout: Duration = Field(2.0, gt=0)  # per reply on the link
    retries: int = Field(2, ge=0)  # extra attempts after a timeout, for commands that change nothing
    poll_s: Duration = Field(5.0, gt=0)  # $STAT polling once a coat's nominal time has passed
    coat_margin_s: Duration = Field(120.0, ge=0)  # how long past its nominal time a coat may run
