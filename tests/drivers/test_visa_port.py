"""visa:// links: the pyvisa port under the unchanged SerialTransport (timeouts, retries, journaling),
against the pyvisa-sim furnace file and the furnace emulator on a pty, and the checks of the URL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from closedloop.controller.protocol.model import parse_protocol_text
from closedloop.drivers.base import InstrumentFault
from closedloop.drivers.serial_config import check_connection
from closedloop.drivers.transport import SerialTransport, TransportSettings, open_port
from closedloop.drivers.visa_port import VisaLink, VisaPort, parse_visa_url
from closedloop.simulators.emulator import Device, PtyServer, ScaledClock
from closedloop.simulators.furnace import IDN, FurnaceModel
from tests import paths

SIM_FILE = paths.ROOT / "simulators" / "visa" / "furnace.yaml"
SIM_URL = f"visa://ASRL1::INSTR?sim={SIM_FILE}"
FAST = TransportSettings(timeout=0.2, retries=2, retry_backoff=0.01, reconnect_attempts=2, reconnect_backoff=0.01)


class Journal(list[tuple[str, str]]):
    def __call__(self, direction: str, text: str) -> None:
        self.append((direction, text))


def sim_transport(journal: Journal) -> SerialTransport:
    """A link to the pyvisa-sim furnace with its error queue emptied (pyvisa keeps one simulated device
    per file for the whole process, so earlier tests may have left errors in it)."""
    transport = SerialTransport(SIM_URL, FAST)
    while not transport.query("SYST:ERR?").startswith("0,"):
        pass
    transport.set_journal(journal)
    return transport


def test_urls_parse_into_resource_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_visa_url("visa://GPIB0::12::INSTR") == VisaLink("GPIB0::12::INSTR", "@py")
    assert parse_visa_url("visa://TCPIP0::10.0.0.5::inst0::INSTR?backend=@ivi").library == "@ivi"
    assert parse_visa_url("visa://ASRL/dev/pts/3::INSTR").resource == "ASRL/dev/pts/3::INSTR"
    monkeypatch.chdir(paths.ROOT)  # a relative sim file is found from the directory closedloop runs in
    link = parse_visa_url("visa://ASRL1::INSTR?sim=simulators/visa/furnace.yaml")
    assert link.library == "simulators/visa/furnace.yaml@sim" and link.backend == "@sim"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("visa://", "needs a VISA resource string; write visa://RESOURCE"),
        ("visa://?backend=@py", "needs a VISA resource string"),
        ("visa://GPIB0::12::INSTR?timeout=3", r"unknown setting\(s\) \['timeout'\]; visa:// takes backend and sim"),
        ("visa://GPIB0::12::INSTR?backend=", "give backend= once, with a value"),
        ("visa://GPIB0::12::INSTR?backend=@py&backend=@ivi", "give backend= once"),
        ("visa://ASRL1::INSTR?sim=nowhere/furnace.yaml", r"the pyvisa-sim file 'nowhere/furnace.yaml' does not exist"),
        (f"visa://ASRL1::INSTR?sim={SIM_FILE}&backend=@py", "sim= picks the pyvisa-sim backend itself; remove backend="),
        ("visa://TCPIP::10.0.0.5::SOCKET", r"'TCPIP::10.0.0.5::SOCKET' is not a VISA resource string.*port part is mandatory"),
        ("visa://COM3", "is not a VISA resource string"),
    ],
)
def test_bad_visa_urls_say_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_connection(url)


def test_every_documented_resource_form_is_accepted() -> None:
    for url in ("visa://GPIB0::12::INSTR", "visa://TCPIP0::192.168.1.5::inst0::INSTR", "visa://TCPIP::127.0.0.1::5025::SOCKET",
                "visa://ASRL/dev/pts/3::INSTR", "visa://USB0::0x0957::0x1796::MY56310124::INSTR", SIM_URL,
                "visa://MyScope?backend=@ivi"):  # a system VISA may know aliases, so they are left to it
        assert check_connection(url) == url


def test_a_protocol_with_a_bad_visa_connection_names_the_field() -> None:
    text = (paths.PROTOCOLS / "trmc_opv_blend.yaml").read_text()
    assert "connection: sim://trmc" in text
    bad = text.replace("connection: sim://trmc", "connection: visa://TCPIP::127.0.0.1::5025::SOCKET?sim=gone.yaml", 1)
    with pytest.raises((ValueError, ValidationError), match=r"connection.*pyvisa-sim file 'gone.yaml' does not exist"):
        parse_protocol_text(bad, "trmc_opv_blend.yaml")


def test_a_missing_backend_or_bad_sim_file_is_a_clear_error_when_the_link_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no VISA backend '@nosuch'.*install a system VISA"):
        open_port("visa://GPIB0::12::INSTR?backend=@nosuch", FAST)
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: '1.1'\ndevices: {furnace: {dialogues: [{q: '*IDN?'}]}}\nresources: {ASRL1::INSTR: {device: nope}}\n")
    with pytest.raises(ValueError, match=rf"pyvisa-sim cannot load {broken}"):
        open_port(f"visa://ASRL1::INSTR?sim={broken}", FAST)


def test_a_resource_that_is_not_there_is_an_instrument_fault_naming_the_link() -> None:
    transport = SerialTransport("visa://ASRL/dev/closedloop-no-such-port::INSTR", FAST)
    assert isinstance(transport._port, VisaPort)  # built through the registered visa scheme
    with pytest.raises(InstrumentFault, match=r"cannot open visa://ASRL/dev/closedloop-no-such-port::INSTR: "
                       r"VISA cannot open .*No such file or directory.*check the device path"):
        transport.query("*IDN?")
    with pytest.raises(ValueError, match=r"has no resource 'ASRL9::INSTR'; use one of ASRL1::INSTR, "):
        SerialTransport(f"visa://ASRL9::INSTR?sim={SIM_FILE}", FAST)


def test_queries_and_sets_through_pyvisa_sim_are_journaled() -> None:
    journal = Journal()
    transport = sim_transport(journal)
    assert transport.query("*IDN?").startswith("KILNCO,TF-1200")
    transport.write("SOUR:TEMP 350.0")
    assert transport.query("SOUR:TEMP?") == "350.0"
    assert transport.query("SYST:ERR?") == '0,"No error"'
    transport.write("SOUR:TEMP 5000")  # outside the sim file's range: refused into the error queue
    assert transport.query("SYST:ERR?").startswith("-100")
    assert transport.query("SOUR:TEMP?") == "350.0"
    assert journal == [("tx", "*IDN?"), ("rx", "KILNCO,TF-1200,SIM-VISA,1.0"), ("tx", "SOUR:TEMP 350.0"),
                       ("tx", "SOUR:TEMP?"), ("rx", "350.0"), ("tx", "SYST:ERR?"), ("rx", '0,"No error"'),
                       ("tx", "SOUR:TEMP 5000"), ("tx", "SYST:ERR?"), ("rx", '-100,"Command error"'),
                       ("tx", "SOUR:TEMP?"), ("rx", "350.0")]
    for command in ("SOUR:TEMP 25", "SOUR:FLOW 0", "ABOR"):  # the protocol's safe state: one-digit values too
        transport.write(command)
        assert transport.query("SYST:ERR?") == '0,"No error"', command
    assert transport.query("SOUR:FLOW?") == "0.00"
    transport.close()
    assert not transport.is_open


def test_an_unanswered_query_times_out_retried_only_when_idempotent() -> None:
    journal = Journal()
    transport = sim_transport(journal)
    start = time.monotonic()
    with pytest.raises(InstrumentFault, match=r"no usable reply to 'MEAS:TEMP\?'.*no reply within 0.2 s \(tried 3 times\)"):
        transport.query("MEAS:TEMP?")  # the sim file leaves it unanswered
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < 1.5, elapsed  # three attempts of 0.2 s each, plus back-off
    assert [text for d, text in journal if d == "tx"].count("MEAS:TEMP?") == 3
    journal.clear()
    start = time.monotonic()
    with pytest.raises(InstrumentFault, match=r"sent once: not idempotent, so not retried"):
        transport.query("MEAS:TEMP?", idempotent=False)
    elapsed = time.monotonic() - start
    assert [text for d, text in journal if d == "tx"] == ["MEAS:TEMP?"]
    # The first wait is for the late replies of the three earlier timeouts (none come), then one timeout.
    assert 0.2 <= elapsed < 1.0, elapsed
    assert transport.query("*IDN?").startswith("KILNCO")  # the link is still in step afterwards


def test_visa_serial_reads_a_pty_like_pyserial_does_including_stale_replies() -> None:
    """The same furnace emulator on a pty, through pyvisa-py's ASRL resource: replies, the stale-reply
    guard (a late reply is discarded, not taken as the next answer) and the journal match the plain path."""
    device = Device(FurnaceModel(ScaledClock(36000.0), seed=1))
    with PtyServer(device) as server:
        journals = []
        for url in (server.path, f"visa://ASRL{server.path}::INSTR"):
            journal = Journal()
            transport = SerialTransport(url, TransportSettings(read_terminator="\r\n", timeout=0.5), journal=journal)
            assert transport.query("*IDN?") == IDN
            transport.write("SOUR:TEMP 300")
            assert transport.query("SOUR:TEMP?") == "300.0"
            transport.write("*IDN?")  # a reply nobody reads: the next query must not take it
            time.sleep(0.1)
            assert transport.query("SOUR:TEMP?") == "300.0"
            transport.close()
            journals.append(journal)
        assert journals[0] == journals[1]
        assert ("rx", f"[discarded stale input: '{IDN}\\r\\n']") in journals[1]
