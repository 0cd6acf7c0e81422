"""The TRMC driver with `word_format: ASCII`: over a visa:// link to the pyvisa-sim file
simulators/visa/trmc.yaml (text only, fixed replies), against the station's emulator in process and in
`closedloop emulate trmc`, with the same analysis as the binary formats; a cut-short ASCII record is an
InstrumentFault; and a protocol pointing at the sim file validates and dry-runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from closedloop.controller.cli.main import main
from closedloop.controller.engine.clock import VirtualClock
from closedloop.drivers.base import InstrumentContext, InstrumentFault
from closedloop.drivers.trmc_analysis import ELEMENTARY_CHARGE
from closedloop.drivers.trmc_driver import TrmcDriver
from closedloop.drivers.visa_port import VisaPort
from closedloop.simulators.emulator import ScaledClock
from closedloop.simulators.faults import Emission, FaultInjector
from closedloop.simulators.registry import in_process_port
from closedloop.simulators.trmc.wire import TrmcWireModel
from tests import paths
from tests.emulated import emulator_process

SIM_FILE = paths.ROOT / "simulators" / "visa" / "trmc.yaml"
SIM_URL = "visa://ASRL1::INSTR?sim=simulators/visa/trmc.yaml"  # relative: run from the root (at_root)
GOOD_FILM = {"acceptor_fraction": 0.5, "anneal_temp": 140.0, "anneal_time": 10.0, "spin_speed": 2000,
             "solvent": "chlorobenzene"}
TIME_SCALE = 7200.0


def run(driver: TrmcDriver, clock: Any = None, trial_id: int = 1) -> tuple[Any, list[tuple[str, str]]]:
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=clock or VirtualClock(), trial_id=trial_id, journal=lambda d, t: journal.append((d, t)))
    try:
        return driver.run(GOOD_FILM, ctx), journal
    finally:
        driver.close()


def sim_replies() -> dict[str, str]:
    """query -> fixed reply, as the pyvisa-sim file has them."""
    device = YAML(typ="safe").load(SIM_FILE.read_text())["devices"]["trmc"]
    return {d["q"]: d["r"] for d in device["dialogues"] if "r" in d}


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(paths.ROOT)
    return paths.ROOT


def test_a_trial_over_pyvisa_sim_reads_the_ascii_record_and_analyzes_it(at_root: Path) -> None:
    driver = TrmcDriver(SIM_URL, {"word_format": "ascii"})
    assert isinstance(driver.transport._port, VisaPort)
    measurement, journal = run(driver)
    assert measurement.status == "ok"
    assert measurement.instrument == "CLOSEDLOOP,TRMC-SIM-VISA,SN0001,1.0"
    # The file's transient and readings, converted by hand: the peak of -dPr/Pr over A e I0 F_light.
    replies = sim_replies()
    curve = np.array([float(v) for v in replies["CURV?"].split(",")])
    thickness_cm = float(replies["SAMP:THK?"]) * 1e-7
    scale = (float(replies["CAV:SENS?"]) * thickness_cm * ELEMENTARY_CHARGE * 3e14
             * (1 - 10 ** -float(replies["SAMP:OD?"])) / thickness_cm)
    phi = measurement.values["phi_sum_mu_max"]
    assert math.isfinite(phi)
    assert phi == pytest.approx(-curve.min() / scale, rel=0.03)  # ~2.0e-3 cm^2/(V s)
    assert 150 < measurement.values["tau_half"] < 400  # ns: the 80 ns and 600 ns decays, mixed 0.6:0.4
    np.testing.assert_array_equal(measurement.artifacts["dPr_over_Pr"], curve)
    np.testing.assert_allclose(measurement.artifacts["time_s"], (np.arange(200) - 20) * 10e-9, atol=1e-18)
    sent = [text for direction, text in journal if direction == "tx"]
    assert sent[sent.index("CAV:TUNE"):] == [
        "CAV:TUNE", "SYST:ERR?", "*OPC?", "CAV:F0?", "CAV:Q?", "CAV:PR?", "CAV:SENS?", "SAMP:THK?", "SAMP:OD?",
        "SYST:ERR?", "ACQ:AVER 64", "WAV:FORM ASCII", "SYST:ERR?", "EXC:SHUT OPEN", "SYST:ERR?", "ACQ:SING",
        "SYST:ERR?", "*OPC?", "EXC:SHUT CLOS", "WAV:PRE?", "CURV?", "SYST:ERR?",
    ]
    # Every setter the sim file checks was accepted (an error would have faulted the trial).
    assert sent[sent.index("SAMP:SOLV chlorobenzene"):][:2] == ["SAMP:SOLV chlorobenzene", "SAMP:ID 1"]
    received = [text for direction, text in journal if direction == "rx"]
    assert received.count('0,"No error"') == sent.count("SYST:ERR?") == 10
    # The record is in the artifacts; the journal keeps its start and length, as for a binary block.
    (record,) = (text for text in received if text.endswith(" chars]"))
    assert record == replies["CURV?"][:80] + f"... [{len(replies['CURV?'])} chars]"


def test_a_protocol_left_at_a_binary_format_fails_at_the_format_command(at_root: Path) -> None:
    with pytest.raises(InstrumentFault, match=r"""(?s)after 'WAV:FORM INT16'.*-100,"Command error\""""):
        run(TrmcDriver(SIM_URL))


def test_ascii_gives_the_analysis_of_the_binary_formats_within_their_quantization() -> None:
    results = {}
    for word_format in ("INT16", "FLOAT32", "ASCII"):
        port = in_process_port("trmc", seed=7)
        results[word_format], journal = run(TrmcDriver("sim://trmc", {"word_format": word_format}, port=port))
        assert f"WAV:FORM {word_format}" in port.device.commands
    ascii_, float32, int16 = results["ASCII"], results["FLOAT32"], results["INT16"]
    assert ascii_.status == float32.status == int16.status == "ok"
    record = float32.artifacts["dPr_over_Pr"]
    # 7 significant digits in text, 24 bits in FLOAT32, 1/30000 of the swing in INT16.
    np.testing.assert_allclose(ascii_.artifacts["dPr_over_Pr"], record, rtol=1e-6, atol=1e-12)
    swing = np.abs(record).max()
    np.testing.assert_allclose(int16.artifacts["dPr_over_Pr"], record, atol=swing / 30000)
    for name in ("phi_sum_mu_max", "tau_half"):
        assert ascii_.values[name] == pytest.approx(float32.values[name], rel=1e-6)
        assert ascii_.values[name] == pytest.approx(int16.values[name], rel=1e-4)
    # 4000 values: ~56 kB on one line, journaled as its start and length.
    assert any(direction == "rx" and text.endswith(" chars]") for direction, text in journal)
    assert max(len(text) for _, text in journal) < 120


class CutAscii(FaultInjector):
    """The CURV? reply cut in half: without its terminator (a link gone quiet), or terminated early
    at a comma (values missing), or in the middle of a number."""

    def __init__(self, how: str) -> None:
        super().__init__("")
        self.how = how

    def on_reply(self, number: int, line: str, reply: bytes, terminator: bytes) -> tuple[Emission, bool]:
        if line.strip().upper() != "CURV?":
            return super().on_reply(number, line, reply, terminator)
        half = reply[: len(reply) // 2]
        if self.how == "no terminator":
            return Emission(half), False
        if self.how == "values missing":
            return Emission(half[: half.rindex(b",")] + terminator), False
        cut = half.index(b"E", half.rindex(b",")) + 1  # "-1.234567E" of "-1.234567E-04"
        return Emission(half[:cut] + terminator), False


@pytest.mark.parametrize(("how", "message"), [
    ("no terminator", r"no usable reply to 'CURV\?'.*partial reply .* \(tried 3 times\)"),
    ("values missing", r"CURV\? returned 19\d\d samples but the preamble announced 4000"),
    ("mid number", r"CURV\?: expected a comma-separated list of numbers, got '.*'\.\.\. \(\d+ chars\) \(item 19\d\d of 19\d\d: .*\)"),
])
def test_a_cut_short_ascii_record_is_an_instrument_fault(how: str, message: str) -> None:
    port = in_process_port("trmc", seed=1)
    port.device.faults = CutAscii(how)
    with pytest.raises(InstrumentFault, match=f"(?s){message}") as caught:
        run(TrmcDriver("sim://trmc", {"word_format": "ASCII"}, port=port))
    assert len(str(caught.value)) < 600  # the record is quoted in part, never whole
    assert not port.device.model.shutter_open


def test_emulate_cli_serves_the_ascii_record_on_a_pty() -> None:
    """`closedloop emulate trmc --pty`: the same ~56 kB line over a real pseudo-terminal, the same values."""
    options = {"word_format": "ascii", "timeout": 1.0, "poll_s": 2.0, "opc_margin_s": 600.0}
    with emulator_process("trmc", "--seed", "3", "--time-scale", str(TIME_SCALE)) as pty:
        over_pty, journal = run(TrmcDriver(pty, options), ScaledClock(TIME_SCALE))
    in_process, _ = run(TrmcDriver("sim://trmc", {"word_format": "ascii"}, port=in_process_port("trmc", seed=3)))
    assert over_pty.status == in_process.status == "ok"
    np.testing.assert_array_equal(over_pty.artifacts["dPr_over_Pr"], in_process.artifacts["dPr_over_Pr"])
    assert over_pty.values == in_process.values
    assert ("tx", "WAV:FORM ASCII") in journal


@pytest.mark.slow
def test_a_protocol_on_the_sim_file_validates_and_dry_runs_against_the_emulator(tmp_path: Path) -> None:
    """The trmc driver names its emulator, so the dry run measures through sim://trmc, in ASCII."""
    text = (paths.PROTOCOLS / "trmc_opv_blend.yaml").read_text()
    for old, new in (("connection: sim://trmc", f"connection: visa://ASRL1::INSTR?sim={SIM_FILE}"),
                     ("options: {averages: 64,", "options: {word_format: ascii, averages: 64,"),
                     ("budget: {trials: 40,", "budget: {trials: 2,"),
                     ("initial: {method: sobol, n: 8}", "initial: {method: sobol, n: 2}")):
        assert old in text, old
        text = text.replace(old, new)
    protocol = tmp_path / "trmc_visa_sim.yaml"
    protocol.write_text(text)
    checked = CliRunner().invoke(main, ["validate", str(protocol)])
    assert checked.exit_code == 0, checked.output
    assert f"instrument: trmc at visa://ASRL1::INSTR?sim={SIM_FILE}" in checked.output
    dry = CliRunner().invoke(main, ["validate", "--dry-run", "--scratch-dir", str(tmp_path / "scratch"), str(protocol)])
    assert dry.exit_code == 0, dry.output
    assert "against the in-process simulator (sim://trmc)" in dry.output
    assert "WAV:FORM ASCII" in dry.output
    assert "would run 2 trials" in dry.output


def test_the_wire_model_answers_ascii_and_says_when_it_has_no_record() -> None:
    model = TrmcWireModel(VirtualClock(), seed=0)
    assert model.handle("WAV:FORM ascii") is None
    assert model.handle("WAV:FORM?") == "ASCII"
    assert model.handle("CURV?") == "9.91E+37"  # SCPI's "not a number": nothing acquired yet
    assert model.handle("SYST:ERR?").startswith("-230,")
    assert model.handle("WAV:FORM ASC") is None  # not a format the station knows
    assert model.handle("SYST:ERR?").startswith("-224,")
    assert model.handle("WAV:FORM?") == "ASCII"
