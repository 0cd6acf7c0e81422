"""The manual instrument's driver: the operator is shown the conditions, types each measured value (units
converted, bad answers asked again with the reason), `f` for a failed sample, and a note."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from pydantic import ValidationError

from closedloop.controller.engine.clock import StationClock
from closedloop.drivers.base import EnvelopeViolation, InstrumentContext, Limit, SafetyEnvelope
from closedloop.drivers.manual import ManualInstrumentConfig
from closedloop.drivers.manual_driver import ManualDriver

SHOWN = SafetyEnvelope({
    "spin_speed": Limit(unit="rpm"),
    "anneal_temp": Limit(unit="degC"),
    "solvent": Limit(allowed=("toluene", "chloroform")),
})
FILM = {"spin_speed": 2400, "anneal_temp": 121.23456, "solvent": "toluene"}


def driver(positive: frozenset[str] = frozenset(), **section: object) -> ManualDriver:
    config = ManualInstrumentConfig.model_validate(
        {"driver": "manual", "measures": {"roughness": "nm", "thickness": "nm"}, **section})
    return ManualDriver(config.accepting(SHOWN, positive))


class Operator:
    """Answers the driver's questions from a script, keeping every question it was asked."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.questions: list[str] = []

    def __call__(self, question: str) -> str:
        self.questions.append(question)
        return self.answers.pop(0)


def run(answers: Iterable[str], conditions: dict[str, object] | None = None,  # type: ignore[no-untyped-def]
        positive: frozenset[str] = frozenset(), **section: object):
    operator = Operator(answers)
    journal: list[tuple[str, str]] = []
    ctx = InstrumentContext(clock=StationClock(0.0), trial_id=4, journal=lambda d, t: journal.append((d, t)),
                            ask=operator)
    measurement = driver(positive, **section).run(FILM if conditions is None else conditions, ctx)
    return measurement, operator, journal


def test_values_are_read_in_the_protocols_units_and_stored_with_the_note() -> None:
    m, operator, journal = run(["2.5", "0.31 um", "  slight comet streak "])
    assert (m.status, m.values, m.units) == ("ok", {"roughness": 2.5, "thickness": pytest.approx(310.0)},
                                            {"roughness": "nm", "thickness": "nm"})
    assert m.detail == "slight comet streak" and m.analysis == "manual"
    # The dialogue is journaled as questions sent and answers received, like an instrument's commands.
    assert [d for d, _ in journal] == ["tx", "rx"] * 3 and journal[3] == ("rx", "0.31 um")


def test_the_conditions_are_shown_rounded_with_their_units_and_the_instructions() -> None:
    _, operator, _ = run(["1", "2", ""], instructions="spin 60 s, then AFM")
    first = operator.questions[0].splitlines()
    assert first[0] == "trial 4: run it by hand with"
    assert "  spin_speed   2400 rpm" in first and "  anneal_temp  121.2 degC" in first and "  solvent      toluene" in first
    assert "  spin 60 s, then AFM" in first and first[-1] == "roughness [nm]?"
    assert operator.questions[1] == "thickness [nm]?"  # the conditions are shown once per trial


def test_an_answer_that_cannot_be_read_is_asked_again_with_the_reason() -> None:
    m, operator, _ = run(["abc", "", "3 degC", "nan", "12 nm", "300", ""])
    assert m.values == {"roughness": 12.0, "thickness": 300.0}
    reasons = [q.splitlines()[-2] for q in operator.questions[1:5]]
    assert reasons[0] == "could not read 'abc': expected a number or a quantity such as '10 nm', got 'abc'"
    assert reasons[1] == "could not read '': a value is needed; type f if the sample failed"
    assert reasons[2] == "could not read '3 degC': cannot convert 'degC' to 'nm': different dimensions"
    assert "not a finite number; type f" in reasons[3]
    assert all(q.splitlines()[-1] == "roughness [nm]?" for q in operator.questions[:5])
    assert m.detail == "entered by the operator"  # no note given


def test_a_value_modelled_on_a_log_scale_must_be_positive_and_is_asked_again() -> None:
    m, operator, _ = run(["0", "-1 nm", "2.5", "0", ""], positive=frozenset({"roughness"}))
    # roughness (log scale) refuses 0 and -1; thickness (not on a log scale) takes 0 as measured.
    assert m.values == {"roughness": 2.5, "thickness": 0.0}
    reasons = [q.splitlines()[-2] for q in operator.questions[1:3]]
    assert reasons == ["roughness is modelled on a log scale (log: true in the protocol), so it needs a value > 0; "
                       "check the number and its unit, or type f if the sample failed"] * 2
    assert operator.questions[3] == "thickness [nm]?"


@pytest.mark.parametrize("mark", ["f", "F", "failed"])
def test_f_marks_a_failed_sample_without_values_and_asks_why(mark: str) -> None:
    m, operator, _ = run(["4.2", mark, "film dewetted"])
    assert (m.status, m.values, m.detail) == ("failed_sample", {}, "film dewetted")
    assert operator.questions[-1] == "why did the sample fail? (optional; Enter for none)"
    m, _, _ = run([mark, ""])
    assert (m.status, m.detail) == ("failed_sample", "marked failed by the operator")


def test_a_condition_the_protocol_does_not_have_is_refused_before_anyone_is_asked() -> None:
    with pytest.raises(EnvelopeViolation, match="declares no such setting"):
        run([], {**FILM, "anneal_time": 10.0})
    with pytest.raises(EnvelopeViolation, match="not one of"):
        run([], {**FILM, "solvent": "water"})


def test_without_an_operator_the_context_says_nobody_can_answer() -> None:
    ctx = InstrumentContext(clock=StationClock(0.0), trial_id=1)
    with pytest.raises(EOFError, match="no operator is attached to answer 'roughness"):
        driver().run(FILM, ctx)


@pytest.mark.parametrize(("section", "message"), [
    ({"measures": {}}, "needs the values the person measures"),
    ({"measures": {"roughness": "nmm"}}, "unknown unit 'nmm'; did you mean 'nm'?"),
    ({"measures": {"2theta": "deg"}}, "'2theta' is not a valid name"),
    ({"measures": {"roughness": "nm"}, "connection": "/dev/ttyUSB0"}, "nothing to connect to; remove connection"),
    ({"measures": {"roughness": "nm"}, "envelope": {}}, "Extra inputs are not permitted"),
])
def test_the_section_is_checked_by_its_own_model(section: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("?", r"\?")):
        ManualInstrumentConfig.model_validate({"driver": "manual", **section})


def test_a_plain_number_has_no_unit() -> None:
    config = ManualInstrumentConfig.model_validate({"driver": "manual", "measures": {"yield_pct": None, "count": ""}})
    assert config.describe().measures == {"yield_pct": "", "count": ""}
    assert config.describe().by_hand
