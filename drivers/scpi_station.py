"""What the TRMC and J-V station drivers share: an SCPI-like link (CRLF replies, LF commands), identify
once per connection, send setters and check the error queue after them, and wait for overlapped
operations by sleeping their nominal time on the trial's clock and then polling `*OPC?`."""

from __future__ import annotations

from closedloop.drivers.base import Clock, InstrumentFault, Journal
from closedloop.drivers.scpi import check_error_queue
from closedloop.drivers.transport import Port, SerialTransport, TransportSettings


class ScpiStation:
    """The link half of a station driver; subclasses add describe, check, run and safe_state."""

    name = "the station"  # in error messages
    error_query = "SYST:ERR?"

    def __init__(self, connection: str, *, baudrate: int, timeout: float, retries: int, poll_s: float,
                 opc_margin_s: float, port: Port | None = None) -> None:
        self.connection = connection
        settings = TransportSettings(
            baudrate=baudrate, read_terminator="\r\n", write_terminator="\n", timeout=timeout, retries=retries
        )
        self.transport = SerialTransport(connection, settings, port=port)
        self.instrument_id = connection
        self._identified_on = -1
        self._poll_s, self._opc_margin_s = poll_s, opc_margin_s

    def _identify(self) -> None:
        self.transport.open()
        if self.transport.connections != self._identified_on:
            self.instrument_id = self.transport.query("*IDN?")
            self._identified_on = self.transport.connections

    def _send_all(self, commands: list[str]) -> None:
        for command in commands:
            self.transport.write(command)
        self._check_errors(commands[-1])

    def _check_errors(self, after: str) -> None:
        check_error_queue(self.transport.query, self.error_query, after, self.name)

    def _operation(self, command: str, nominal_s: float, clock: Clock) -> None:
        """Start an overlapped operation and wait until *OPC? says it completed."""
        self._send_all([command])
        deadline = clock.now() + nominal_s + self._opc_margin_s
        clock.sleep(nominal_s)
        while self.transport.query("*OPC?").strip() != "1":
            if clock.now() >= deadline:
                raise InstrumentFault(
                    f"{command} did not complete within {nominal_s + self._opc_margin_s:g} s "
                    f"(*OPC? still 0); check {self.name}, then resume"
                )
            clock.sleep(self._poll_s)

    def set_journal(self, journal: Journal | None) -> None:
        """Journal the link's commands and replies from now on (see `drivers.base.Journaled`)."""
        self.transport.set_journal(journal)

    def close(self) -> None:
        self.transport.close()
