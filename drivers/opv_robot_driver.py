"""The coating robot's driver: one trial coats one film, labelled with the trial id, and reads its
thickness. The robot speaks checksummed sentences (`drivers.nmea`; commands in simulators/line/robot.py).

A trial: `$ID` once per connection (a wrong instrument is refused), `$COAT,<trial>,...`, sleep the
coat's nominal time on the trial's clock, poll `$STAT` until the robot reports the film DONE, then
`$THK,<trial>`: a thickness (nm) makes an ok measurement, DEWET a failed sample.

Every reply is a sentence. One the robot refused (`$NAK`: our sentence arrived damaged) or one that
arrives damaged (bad checksum, not a sentence) is answered by sending the command once more; a second
failure is an InstrumentFault. Re-sending a COAT is safe because the robot acknowledges a COAT of the film
it is already making without starting another; a COAT that got no reply at all is not re-sent (nobody
can tell whether it arrived), as with any start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from closedloop.drivers.base import (
    Clock,
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Journal,
    Measurement,
    Value,
    require_settings,
)
from closedloop.drivers.nmea import SentenceError, frame, unframe
from closedloop.drivers.opv_robot import COAT_S, IDENTITY, ROBOT_DESCRIPTION, ROBOT_ENVELOPE, OpvRobotOptions
from closedloop.drivers.transport import Port, SerialTransport, TransportSettings

ANALYSIS = "opv-robot-profilometer"
ANALYSIS_VERSION = "1"
SETTINGS = ("acceptor_fraction", "solvent", "spin_speed")

log = logging.getLogger(__name__)


class OpvRobotDriver:
    """The coating robot over its link: a device path, socket://HOST:PORT, sim://opv_robot or a `port`."""

    def __init__(
        self,
        connection: str,
        options: OpvRobotOptions | Mapping[str, Any] | None = None,
        *,
        port: Port | None = None,
    ) -> None:
        """`options` as a protocol gives them (validated here: a bad one raises ValueError naming it)."""
        self.connection = connection
        self.options = options if isinstance(options, OpvRobotOptions) else OpvRobotOptions.model_validate(options or {})
        settings = TransportSettings(
            baudrate=self.options.baudrate,
            read_terminator="\r\n",
            write_terminator="\r\n",
            timeout=self.options.timeout,
            retries=self.options.retries,
        )
        self.transport = SerialTransport(connection, settings, port=port)
        self.instrument_id = connection
        self._identified_on = -1
        self._aborted = threading.Event()

    def describe(self) -> DriverDescription:
        return ROBOT_DESCRIPTION

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse settings outside the envelope and trials missing one the robot needs, before any I/O."""
        ROBOT_ENVELOPE.check(conditions)
        require_settings(conditions, SETTINGS, "the robot needs it for every film: add it to the step's parameters")

    # -- one trial -------------------------------------------------------------------------------

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        started = ctx.clock.now()
        self._aborted.clear()
        self.transport.set_journal(ctx.journal)
        self.transport.follow_clock(ctx.clock)
        self._identify()
        sample, solvent, rpm = str(ctx.trial_id), str(conditions["solvent"]), float(conditions["spin_speed"])
        fraction = float(conditions["acceptor_fraction"])
        self.exchange("COAT", sample, f"{fraction:.4f}", solvent, f"{rpm:.0f}", idempotent=False)
        self._await_coat(sample, ctx.clock)
        reply = self.exchange("THK", sample)
        if reply[1:2] != [sample] or len(reply) != 3:
            raise InstrumentFault(f"$THK,{sample} answered for another film: {','.join(reply)}")
        result = Measurement(analysis=ANALYSIS, analysis_version=ANALYSIS_VERSION, instrument=self.instrument_id,
                             duration_s=ctx.clock.now() - started)
        if reply[2] == "DEWET":
            result.status = "failed_sample"
            result.detail = (f"sample {sample}: the film dewetted on the spin coater "
                             f"({solvent}, {rpm:.0f} rpm, acceptor fraction {fraction:.2f})")
            return result
        try:
            result.values, result.units = {"thickness": float(reply[2])}, {"thickness": "nm"}
        except ValueError:
            raise InstrumentFault(f"$THK,{sample} answered {reply[2]!r}, not a thickness") from None
        return result

    def exchange(self, *fields: str, idempotent: bool = True) -> list[str]:
        """Send one sentence and return the reply's fields; once more after a NAK or a damaged reply.
        An `$ERR` reply, or a second failure, raises InstrumentFault."""
        sentence = frame(*fields)
        problem = ""
        for _ in range(2):
            reply = self.transport.query(sentence, idempotent=idempotent)
            try:
                answer = unframe(reply)
            except SentenceError as e:
                problem = f"a damaged reply ({e})"
                continue
            if answer[0] == "NAK":
                problem = f"$NAK,{','.join(answer[1:])} (the robot got our sentence damaged)"
                continue
            if answer[0] == "ERR":
                raise InstrumentFault(f"{sentence}: the robot answered error {','.join(answer[1:])}")
            return answer
        raise InstrumentFault(f"{sentence}: {problem}, twice; check the cable and the line settings")

    def _identify(self) -> None:
        self.transport.open()
        if self.transport.connections == self._identified_on:
            return
        answer = self.exchange("ID")
        identity = ",".join(answer[1:])
        if answer[0] != "ID" or not identity.startswith(IDENTITY.split(",")[0]):
            raise InstrumentFault(f"{self.connection}: $ID answered {','.join(answer)!r}, not the coating robot "
                                  f"({IDENTITY}); is this the right port?")
        self.instrument_id = identity
        self._identified_on = self.transport.connections

    def _await_coat(self, sample: str, clock: Clock) -> None:
        """Sleep the coat's nominal time, then poll $STAT until the robot reports this film DONE."""
        deadline = clock.now() + COAT_S + self.options.coat_margin_s
        clock.sleep(COAT_S)
        while True:
            if self._aborted.is_set():
                raise InstrumentFault(f"the coat of sample {sample} was aborted")
            status = self.exchange("STAT")
            if status[1:] == ["DONE", sample]:
                return
            if status[1:] != ["BUSY", sample]:
                raise InstrumentFault(f"the robot lost the coat of sample {sample} ($STAT answered "
                                      f"{','.join(status)}); was it power-cycled or aborted?")
            if clock.now() >= deadline:
                raise InstrumentFault(f"the coat of sample {sample} did not finish within "
                                      f"{COAT_S + self.options.coat_margin_s:g} s; check the robot, then resume")
            clock.sleep(self.options.poll_s)

    # -- outside a trial -------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop a coat in progress from another thread: the robot scraps the film and parks."""
        self._aborted.set()
        self.safe_state()

    def safe_state(self) -> None:
        """Abort any coat, close the solution valves, park the arm. Failures are logged, never raised."""
        try:
            self.exchange("SAFE")
        except Exception as e:  # safe_state must never raise, whatever the link does
            log.warning("safe_state: parking the robot at %s failed: %s", self.connection, e)

    def set_journal(self, journal: Journal | None) -> None:
        """Journal the link's commands and replies from now on (see `drivers.base.Journaled`)."""
        self.transport.set_journal(journal)

    def close(self) -> None:
        self.transport.close()
