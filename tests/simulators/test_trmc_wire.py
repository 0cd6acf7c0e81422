"""The TRMC station's wire model: its command set, timing, errors and the binary curve it serves."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.controller.engine.clock import VirtualClock
from closedloop.controller.protocol.catalog import check_driver_name, instrument_names
from closedloop.drivers.scpi import decode_block, parse_block, parse_error_reply
from closedloop.simulators.emulator import Device
from closedloop.simulators.registry import EMULATORS, make_model
from closedloop.simulators.trmc.wire import LOAD_S, SPIN_COAT_S, TUNE_S, TrmcWireModel

RECIPE = [
    "SAMP:ACC 0.5",
    "SAMP:TEMP 140",
    "SAMP:TIME 10",
    "SAMP:SPIN 2000",
    "SAMP:SOLV chlorobenzene",
]


def ask(device: Device, line: str) -> bytes:
    return device.command(line).data


def text(device: Device, line: str) -> str:
    return ask(device, line).decode("ascii").rstrip("\r\n")


def errors(device: Device) -> list[str]:
    found = []
    while (reply := text(device, "SYST:ERR?")) and parse_error_reply(reply)[0] != 0:
        found.append(reply)
    return found


def prepared(clock: VirtualClock, seed: int = 0) -> Device:
    """A station with a film made, loaded and the cavity tuned, clock moved past each operation."""
    device = Device(TrmcWireModel(clock, seed))
    for line in RECIPE:
        assert ask(device, line) == b""
    for line, seconds in (("SAMP:PREP", SPIN_COAT_S + 600.0), ("SAMP:LOAD", LOAD_S), ("CAV:TUNE", TUNE_S)):
        ask(device, line)
        clock.sleep(seconds)
    assert errors(device) == []
    return device


def acquire(device: Device, clock: VirtualClock, averages: int = 64) -> None:
    for line in (f"ACQ:AVER {averages}", "EXC:SHUT OPEN", "ACQ:SING"):
        ask(device, line)
    clock.sleep(averages / 10.0)
    ask(device, "EXC:SHUT CLOS")


def test_the_model_is_registered_and_trmc_keeps_its_own_drivers() -> None:
    assert isinstance(make_model("trmc", VirtualClock(), 1), TrmcWireModel)
    # The wire model speaks the TRMC driver's protocol, not the serial driver's; both TRMC drivers stay valid.
    assert EMULATORS["trmc"].driver == "trmc"
    assert {"trmc", "sim:trmc"} <= set(instrument_names())
    check_driver_name("sim:trmc")


def test_identity_and_errors_for_bad_commands() -> None:
    device = Device(TrmcWireModel(VirtualClock(), 0))
    assert text(device, "*IDN?").startswith("CLOSEDLOOP,TRMC-SIM")
    ask(device, "SAMP:TEMP 900")
    ask(device, "SAMP:SOLV water")
    ask(device, "EXC:WAV abc")
    ask(device, "FOO:BAR 1")
    codes = [parse_error_reply(e)[0] for e in errors(device)]
    assert codes == [-222, -224, -104, -113]
    ask(device, "SAMP:PREP")  # recipe incomplete: refused with a settings conflict
    assert [parse_error_reply(e)[0] for e in errors(device)] == [-221]


def test_operations_take_time_and_opc_reports_completion() -> None:
    clock = VirtualClock()
    device = Device(TrmcWireModel(clock, 0))
    for line in RECIPE:
        ask(device, line)
    ask(device, "SAMP:PREP")
    assert text(device, "*OPC?") == "0"
    ask(device, "SAMP:LOAD")  # a second operation while one runs is refused
    assert [parse_error_reply(e)[0] for e in errors(device)] == [-213]
    clock.sleep(SPIN_COAT_S + 600.0 - 1.0)
    assert text(device, "*OPC?") == "0"
    clock.sleep(1.0)
    assert text(device, "*OPC?") == "1"


def test_cavity_readings_after_tune() -> None:
    clock = VirtualClock()
    device = prepared(clock, seed=4)
    f0, q, dark = (float(text(device, f"CAV:{k}?")) for k in ("F0", "Q", "PR"))
    assert 9.0e9 < f0 < 9.2e9
    assert 2000 < q < 3000
    assert 2.5 < dark < 3.5
    assert 50 < float(text(device, "SAMP:THK?")) < 200
    assert float(text(device, "SAMP:OD?")) > 0


def test_acquisition_needs_an_open_shutter() -> None:
    clock = VirtualClock()
    device = prepared(clock)
    ask(device, "ACQ:SING")
    assert [parse_error_reply(e)[0] for e in errors(device)] == [-221]
    assert parse_block(ask(device, "CURV?")) == b""  # no record, and an error says why
    assert [parse_error_reply(e)[0] for e in errors(device)] == [-230]


@pytest.mark.parametrize(("word_format", "dtype", "tolerance"), [("INT16", "<i2", 1e-4), ("FLOAT32", "<f4", 1e-6)])
def test_curve_block_reproduces_the_averaged_record(word_format: str, dtype: str, tolerance: float) -> None:
    clock = VirtualClock()
    device = prepared(clock, seed=2)
    ask(device, f"WAV:FORM {word_format}")
    acquire(device, clock, averages=32)
    x_inc, x_origin, y_inc, y_origin, points = (float(v) for v in text(device, "WAV:PRE?").split(","))
    raw = ask(device, "CURV?")
    assert raw.endswith(b"\r\n")  # a block response ends like any other reply
    samples = decode_block(parse_block(raw), dtype)
    assert samples.size == int(points)
    truth = device.model.last_transient
    assert truth is not None
    time_s = x_origin + x_inc * np.arange(samples.size)
    np.testing.assert_allclose(time_s, truth.time_s, rtol=1e-6, atol=1e-15)
    scale = np.abs(truth.dPr_over_Pr).max()
    np.testing.assert_allclose(y_origin + y_inc * samples, truth.dPr_over_Pr, atol=tolerance * scale)
    assert errors(device) == []


def test_each_film_has_its_own_seeded_random_stream() -> None:
    records = []
    for _ in range(2):
        clock = VirtualClock()
        device = prepared(clock, seed=9)
        acquire(device, clock)
        records.append(ask(device, "CURV?"))
    assert records[0] == records[1]  # same seed, same first film: the same bytes
    clock = VirtualClock()
    device = prepared(clock, seed=10)
    acquire(device, clock)
    assert ask(device, "CURV?") != records[0]


def test_a_labelled_film_is_the_same_film_whenever_it_is_made() -> None:
    """SAMP:ID n keys the film's random stream: a trial re-run after a crash re-makes the same sample."""

    def record(labels: list[int]) -> bytes:
        clock = VirtualClock()
        device = Device(TrmcWireModel(clock, seed=4))
        for label in labels:
            ask(device, f"SAMP:ID {label}")
            for line in RECIPE:
                ask(device, line)
            for line, seconds in (("SAMP:PREP", SPIN_COAT_S + 600.0), ("SAMP:LOAD", LOAD_S), ("CAV:TUNE", TUNE_S)):
                ask(device, line)
                clock.sleep(seconds)
            acquire(device, clock)
        assert errors(device) == []
        return ask(device, "CURV?")

    assert record([3]) == record([1, 2, 3])  # film 3, whether first of the day or third
    assert record([3]) != record([4])
    device = Device(TrmcWireModel(VirtualClock(), 0))
    ask(device, "SAMP:ID 1.5")
    assert [parse_error_reply(e)[0] for e in errors(device)] == [-104]


def test_reset_closes_the_shutter_and_forgets_the_film() -> None:
    clock = VirtualClock()
    device = prepared(clock)
    acquire(device, clock)
    ask(device, "EXC:SHUT OPEN")
    ask(device, "*RST")
    assert text(device, "EXC:SHUT?") == "CLOS"
    assert text(device, "CAV:F0?") == "9.91E+37"
