"""The OPV line's emulators: the checksummed sentences, the coating robot, the hot plate, and the film
ledger joining them, whose films give the TRMC response of the one-instrument process model."""

from __future__ import annotations

import pytest

from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.nmea import SentenceError, checksum, frame, unframe
from closedloop.simulators.line.hotplate import HotplateModel, anneal_seconds
from closedloop.simulators.line.ledger import Anneal, CoatedFilm, FilmLedger, FilmRecord
from closedloop.simulators.line.robot import OpvRobotModel
from closedloop.simulators.trmc.process import TrmcProcessModel, coated_thickness_nm

POINTS = [
    {"acceptor_fraction": 0.5, "solvent": "chlorobenzene", "spin_speed": 2000.0, "anneal_temp": 140.0, "anneal_time": 10.0},
    {"acceptor_fraction": 0.3, "solvent": "o-dichlorobenzene", "spin_speed": 800.0, "anneal_temp": 60.0, "anneal_time": 2.5},
    {"acceptor_fraction": 0.7, "solvent": "chloroform", "spin_speed": 3500.0, "anneal_temp": 185.0, "anneal_time": 25.0},
]


def test_sentences_carry_the_xor_checksum_of_their_body() -> None:
    assert checksum("GPGLL,5300.97914,N,00259.98174,E,125926,A") == "28"  # a real NMEA sentence
    assert frame("COAT", "7", "0.5000", "chlorobenzene", "2000") == "$COAT,7,0.5000,chlorobenzene,2000*" + checksum(
        "COAT,7,0.5000,chlorobenzene,2000")
    assert unframe(frame("THK", "7", "104.2") + "\r\n") == ["THK", "7", "104.2"]
    with pytest.raises(SentenceError, match="checksum"):
        unframe("$THK,7,104.2*00")
    with pytest.raises(SentenceError, match="does not start"):
        unframe("THK,7*11")
    with pytest.raises(ValueError, match="cannot be a sentence field"):
        frame("COAT", "a,b")


def test_robot_coats_once_measures_and_records_the_film() -> None:
    clock, ledger = StationClock(0.0), FilmLedger()
    robot = OpvRobotModel(clock, seed=1, ledger=ledger)
    assert unframe(robot.handle("$COAT,3,0.5,chlorobenzene,2000*00")) == ["NAK", "CHECKSUM"]
    assert ledger.film(3) is None
    assert unframe(robot.handle(frame("COAT", "3", "0.5000", "chlorobenzene", "2000"))) == ["ACK", "COAT", "3"]
    # The same COAT again (a re-send after a lost reply) is acknowledged without a second film.
    assert unframe(robot.handle(frame("COAT", "3", "0.5000", "chlorobenzene", "2000"))) == ["ACK", "COAT", "3"]
    assert unframe(robot.handle(frame("COAT", "4", "0.5000", "chlorobenzene", "2000")))[:2] == ["ERR", "BUSY"]
    assert unframe(robot.handle(frame("STAT"))) == ["STAT", "BUSY", "3"]
    assert unframe(robot.handle(frame("THK", "3")))[:2] == ["ERR", "NODATA"]
    clock.sleep(120.0)
    assert unframe(robot.handle(frame("STAT"))) == ["STAT", "DONE", "3"]
    thickness = float(unframe(robot.handle(frame("THK", "3")))[2])
    assert thickness == pytest.approx(coated_thickness_nm(2000.0, "chlorobenzene"), rel=0.05)
    film = ledger.film(3)
    assert film is not None and film.coated == CoatedFilm(0.5, "chlorobenzene", 2000.0, 110.0, False)
    assert unframe(robot.handle(frame("COAT", "5", "1.5", "chlorobenzene", "2000"))) == ["ERR", "RANGE", "fraction"]
    assert unframe(robot.handle(frame("COAT", "5", "0.5", "water", "2000"))) == ["ERR", "SOLVENT", "water"]


def test_thickness_is_realistic_and_fast_spins_dewet_reproducibly() -> None:
    assert 50 < coated_thickness_nm(4000, "o-dichlorobenzene") < coated_thickness_nm(600, "chloroform") < 300
    dewetted = []
    for seed in (0, 1):
        ledger, clock = FilmLedger(), StationClock(0.0)
        robot = OpvRobotModel(clock, seed=seed, ledger=ledger)
        for sample in range(40):
            robot.handle(frame("COAT", str(sample), "0.5", "chloroform", "3950"))
            clock.sleep(130.0)
        dewetted.append([s for s in range(40) if ledger.film(s).coated.dewetted])  # type: ignore[union-attr]
    again, clock = FilmLedger(), StationClock(0.0)
    robot = OpvRobotModel(clock, seed=0, ledger=again)
    robot.handle(frame("COAT", str(dewetted[0][0]), "0.5", "chloroform", "3950"))
    assert again.film(dewetted[0][0]).coated.dewetted  # type: ignore[union-attr]
    assert 10 < len(dewetted[0]) < 35 and dewetted[0] != dewetted[1]  # p ~ 0.67 at 3950 rpm
    clock.sleep(130.0)
    assert unframe(robot.handle(frame("THK", str(dewetted[0][0]))))[2] == "DEWET"


def test_hotplate_ramps_dwells_and_records_the_anneal_of_its_sample() -> None:
    clock, ledger = StationClock(0.0), FilmLedger()
    plate = HotplateModel(clock, seed=2, ledger=ledger)
    for command in ("SOUR:TEMP 145", "SOUR:TIME 10", "INIT"):
        plate.handle(command)
    assert plate.handle("SYST:ERR?").startswith("-221")  # no sample on the plate
    for command in ("SAMP:ID 9", "INIT"):
        plate.handle(command)
    assert ledger.film(9) == FilmRecord(9, None, Anneal(145.0, 10.0))
    assert plate.handle("STAT:OPER?") == "RAMP"
    clock.sleep(8 * 60.0 + 1)
    assert plate.handle("STAT:OPER?") == "DWELL" and plate.handle("MEAS:TEMP?") == "145.0"
    clock.sleep(10 * 60.0)
    assert plate.handle("STAT:OPER?") == "IDLE"
    assert float(plate.handle("FETC:TEMP?") or "nan") == pytest.approx(145.0, abs=1.5)
    assert anneal_seconds(145.0, 10.0) == pytest.approx(8 * 60.0 + 600.0)
    plate.handle("SOUR:TEMP 400")
    assert plate.handle("SYST:ERR?").startswith("-222")


@pytest.mark.parametrize("point", POINTS)
def test_a_film_with_a_line_history_gives_the_one_instrument_truth(point: dict[str, float | str]) -> None:
    ledger = FilmLedger()
    ledger.record_coat(1, CoatedFilm(float(point["acceptor_fraction"]), str(point["solvent"]),
                                     float(point["spin_speed"]), 100.0, False))
    ledger.record_anneal(1, Anneal(float(point["anneal_temp"]), float(point["anneal_time"])))
    film = ledger.film(1)
    assert film is not None
    model = TrmcProcessModel()
    assert model.truth(film.conditions()) == model.truth(point)
    dewet, later = model.dewetting_probability(float(point["spin_speed"])), model.later_failure_probability(point)
    assert 1.0 - (1.0 - dewet) * (1.0 - later) == pytest.approx(model.failure_probability(point), abs=1e-15)


def test_an_unannealed_or_uncoated_film() -> None:
    record = FilmRecord(2, CoatedFilm(0.4, "chlorobenzene", 1500.0, 120.0, False))
    assert record.conditions()["anneal_time"] == 0.0
    with pytest.raises(ValueError, match="sample 5 was never coated"):
        FilmRecord(5, anneal=Anneal(100.0, 5.0)).conditions()
