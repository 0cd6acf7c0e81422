"""Malformed protocols: one located line per problem, exit code 2, never a traceback.

Each case breaks a valid protocol in one place, writes it to a real file, and checks the problem
through the CLI (`closedloop validate`, in process) and through the library (`load_protocol` +
`validate_protocol`): the line number, the field path and the message.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.protocol.model import ProtocolError, ProtocolProblem, load_protocol
from closedloop.controller.protocol.validate import validate_protocol

BASE = """\
name: bad-input-base
description: a valid protocol that each case breaks in one place
space:
  acceptor_fraction: {type: float, low: 0.2, high: 0.8}
  anneal_temp: {type: float, low: 60, high: 200, unit: degC}
  anneal_time: {type: float, low: 1, high: 30, unit: min}
  spin_speed: {type: int, low: 600, high: 4000, step: 100, unit: rpm}
  solvent: {type: choice, values: [chlorobenzene, chloroform]}
constraints:
  - "anneal_temp + 2 * anneal_time <= 220"
objectives:
  phi_sum_mu_max: {direction: maximize, unit: cm^2/(V*s), log: true}
  tau_half: {direction: maximize, unit: ns}
instrument:
  driver: trmc
  connection: sim://trmc
  options: {averages: 64}
planner: {initial: {method: sobol, n: 4}, seed: 1}
budget: {trials: 20, wall_time: 2 h}
stop: {no_improvement: 5}
approval: none
failures: {instrument_fault_retries: 2, on_fault: pause}
"""

MBE = """\
name: bad-input-mbe
space:
  ru_cell_temp: {type: float, low: 1750, high: 1900, unit: degC}
  substrate_temp: {type: float, low: 560, high: 800, unit: degC}
  ozone_flow: {type: float, low: 0.5, high: 10, unit: sccm}
  sr_cell_temp: {type: fixed, value: 470, unit: degC}
objectives:
  rrr: {direction: maximize}
instrument:
  driver: mbe
  connection: sim://mbe
  options: {poll_s: 15 s}
budget: {trials: 20}
"""

POOL = """\
name: pool-base
space:
  radius: {type: float, low: 0.5, high: 2.5, unit: angstrom}
  group: {type: int, low: 1, high: 3}
candidates: {path: pool.csv}
objectives:
  Tm_K: {direction: maximize, unit: K}
instrument: {driver: "sim:lookup", connection: "sim://lookup"}
planner: {initial: {n: 2}}
budget: {trials: 4}
"""
SERIAL = """\
name: serial-base
space:
  temp: {type: float, low: 100, high: 300, unit: degC}
  flow: {type: float, low: 1, high: 5, unit: sccm}
objectives:
  r: {direction: minimize, unit: ohm}
instrument:
  driver: serial
  connection: loop://
  set: {temp: "TEMP {value}", flow: "FLOW {value}"}
  measure: {r: {query: "RES?", unit: ohm}}
  envelope:
    temp: {min: 20, max: 450, unit: degC}
    flow: {min: 0, max: 20, unit: sccm}
budget: {trials: 10}
"""
POOL_CSV = "compound,radius,group,Tm_K\nA,1.0,1,100\nB,2.0,2,300\nC,1.5,3,200\n"


@dataclass(frozen=True)
class Case:
    """`edits` turn the base text into the bad file; the problem is expected on the line holding `at`."""

    edits: tuple[tuple[str, str], ...]
    field: str
    at: str
    message: str
    base: str = BASE


def case(old: str, new: str, field: str, message: str, at: str | None = None, base: str = BASE) -> Case:
    return Case(((old, new),), field, at if at is not None else new.strip().splitlines()[-1], message, base)


CASES: dict[str, Case] = {
    "yaml_syntax_error": case(
        "  tau_half: {direction: maximize, unit: ns}", "  tau_half: {direction: maximize, unit: ns",
        "", "YAML syntax error", at="instrument:"),
    "unknown_top_level_key": case("stop: {no_improvement: 5}", "stpo: {no_improvement: 5}", "stpo", "did you mean 'stop'?"),
    "unknown_nested_key": case("{type: float, low: 0.2, high: 0.8}", "{type: float, lwo: 0.2, high: 0.8}",
                               "space.acceptor_fraction.lwo", "unknown key 'lwo'; did you mean 'low'?", at="lwo"),
    "wrong_type": case("budget: {trials: 20,", "budget: {trials: twenty,", "budget.trials", "valid integer"),
    "low_above_high": case("low: 60, high: 200, unit: degC", "low: 260, high: 200, unit: degC",
                           "space.anneal_temp.low", "low (260.0) is above high (200.0)", at="low: 260"),
    "bounds_outside_envelope": case("low: 60, high: 200, unit: degC", "low: 60, high: 300, unit: degC",
                                    "space.anneal_temp.high", "above the trmc instrument's maximum 250 degC", at="high: 300"),
    "kelvin_bounds_outside_envelope_after_conversion": case(
        "low: 60, high: 200, unit: degC", "low: 290, high: 600, unit: K",
        "space.anneal_temp.low", "low 290 K (= 16.85 degC) is below the trmc instrument's minimum 20 degC", at="low: 290"),
    "incompatible_unit_with_the_instrument": case("low: 60, high: 200, unit: degC", "low: 60, high: 200, unit: ns",
                                                  "space.anneal_temp.unit", "not compatible with the trmc instrument's unit 'degC'",
                                                  at="unit: ns"),
    "incompatible_unit_in_a_quantity": case("low: 60, high: 200, unit: degC", "low: 60 ns, high: 200, unit: degC",
                                            "space.anneal_temp.low", "cannot convert 'ns' to 'degC'", at="60 ns"),
    "unknown_unit": case("high: 30, unit: min}", "high: 30, unit: minutez}", "space.anneal_time.unit",
                         "unknown unit 'minutez'", at="minutez"),
    "infeasible_constraints": case('  - "anneal_temp + 2 * anneal_time <= 220"',
                                   '  - "anneal_temp + 2 * anneal_time <= 220"\n  - "anneal_temp >= 190"\n  - "anneal_time >= 20"',
                                   "constraints", "cannot all hold at once", at="constraints:"),
    "constraint_names_an_unknown_parameter": case("anneal_temp + 2 * anneal_time <= 220", "anneal_tmp + 2 * anneal_time <= 220",
                                                  "constraints[0]", "unknown parameter 'anneal_tmp'; did you mean 'anneal_temp'?"),
    "non_linear_constraint": case("anneal_temp + 2 * anneal_time <= 220", "anneal_temp * anneal_time <= 220",
                                  "constraints[0]", "not linear: product of 'anneal_temp' and 'anneal_time'"),
    "code_in_a_constraint": case('"anneal_temp + 2 * anneal_time <= 220"', "\"__import__('os').system('x') <= 1\"",
                                 "constraints[0]", "code is not allowed in a constraint (found a function call)"),
    "duplicate_parameter_name": case("  solvent: {type: choice", "  anneal_temp: {type: float, low: 70, high: 90}\n  solvent: {type: choice",
                                     "space.anneal_temp", "duplicate key 'anneal_temp' (first written on line 5)", at="low: 70"),
    "empty_space": Case((("  acceptor_fraction: {type: float, low: 0.2, high: 0.8}\n", ""),
                         ("  anneal_temp: {type: float, low: 60, high: 200, unit: degC}\n", ""),
                         ("  anneal_time: {type: float, low: 1, high: 30, unit: min}\n", ""),
                         ("  spin_speed: {type: int, low: 600, high: 4000, step: 100, unit: rpm}\n", ""),
                         ("  solvent: {type: choice, values: [chlorobenzene, chloroform]}\n", ""),
                         ("space:", "space: {}")),
                        field="space", at="space: {}", message="must not be empty; declare at least one parameter"),
    "categorical_without_values": case("values: [chlorobenzene, chloroform]", "values: []", "space.solvent.values", "must not be empty"),
    "duplicate_choice_values": case("values: [chlorobenzene, chloroform]", "values: [chloroform, chloroform]",
                                    "space.solvent.values[1]", "value 'chloroform' is listed twice"),
    "objective_the_instrument_cannot_measure": case("  tau_half: {direction: maximize, unit: ns}",
                                                    "  tau_half: {direction: maximize, unit: ns}\n  pce: {direction: maximize}",
                                                    "objectives.pce", "the trmc instrument does not measure 'pce'"),
    "target_with_the_wrong_unit": case("tau_half: {direction: maximize, unit: ns}", "tau_half: {direction: maximize, unit: ns, target: 5 degC}",
                                       "objectives.tau_half.target", "cannot convert 'degC' to 'ns'"),
    "negative_retry_count": case("instrument_fault_retries: 2", "instrument_fault_retries: -1",
                                 "failures.instrument_fault_retries", "must be >= 0, got -1"),
    "int_step_not_dividing_the_range": case("step: 100, unit: rpm", "step: 300, unit: rpm", "space.spin_speed.step",
                                            "step 300 does not divide high - low = 3400; use high: 3900"),
    "log_scale_with_low_at_zero": case("{type: float, low: 0.2, high: 0.8}", "{type: float, low: 0, high: 0.8, log: true}",
                                       "space.acceptor_fraction.low", "a log-scale parameter needs low > 0"),
    "unknown_driver": case("  driver: trmc", "  driver: trmcc", "instrument.driver", "unknown driver 'trmcc'; did you mean 'trmc'?"),
    "bad_connection_scheme": case("  connection: sim://trmc", "  connection: http://lab/trmc", "instrument.connection",
                                  "unknown connection scheme 'http://'"),
    "socket_without_port": case("  connection: sim://trmc", "  connection: socket://trmc-station", "instrument.connection",
                                "needs HOST:PORT"),
    "unknown_approval_mode": case("approval: none", "approval: sometimes", "approval",
                                  "'sometimes' is not allowed; use one of: none, every, outside_region"),
    "outside_region_without_trusted_region": case("approval: none", "approval: outside_region", "approval",
                                                  "outside_region needs a trusted_region"),
    "fixed_value_outside_envelope": case("{type: int, low: 600, high: 4000, step: 100, unit: rpm}", "{type: fixed, value: 9000, unit: rpm}",
                                         "space.spin_speed.value", "value 9000 rpm is above the trmc instrument's maximum 6000 rpm"),
    "choice_value_the_instrument_refuses": case("values: [chlorobenzene, chloroform]", "values: [chlorobenzene, water]",
                                                "space.solvent.values[1]", "'water' is not accepted by the trmc instrument"),
    "parameter_the_instrument_does_not_accept": case("  solvent: {type: choice", "  thickness: {type: float, low: 50, high: 200, unit: nm}\n  solvent: {type: choice",
                                                     "space.thickness", "the trmc instrument does not accept 'thickness'", at="thickness"),
    "driver_option_of_the_wrong_kind": case("options: {averages: 64}", "options: {averages: 64, poll_s: often}",
                                            "instrument.options.poll_s", "expected a duration such as '2 s'", at="often"),
    "unknown_driver_option": case("options: {averages: 64}", "options: {averages: 64, avrages: 32}",
                                  "instrument.options.avrages", "unknown key 'avrages'; did you mean 'averages'?", at="avrages"),
    "mbe_option_of_the_wrong_kind": case("options: {poll_s: 15 s}", "options: {poll_s: often}",
                                         "instrument.options.poll_s", "expected a duration such as '2 s'",
                                         at="often", base=MBE),
    "fault_spec_that_does_not_parse": case("options: {averages: 64}", "options: {averages: 64, faults: 'no_replies:0.1'}",
                                           "instrument.options.faults", "unknown fault 'no_replies'", at="faults"),
    "option_outside_envelope": case("options: {averages: 64}", "options: {averages: 64, wavelength: 2 um}",
                                    "instrument.options.wavelength", "wavelength = 2000 nm is outside the station's envelope (above the maximum 1100.0 nm)"),
    "equality_constraint_infeasible_with_bounds": case('  - "anneal_temp + 2 * anneal_time <= 220"',
                                                       '  - "anneal_temp + 2 * anneal_time <= 220"\n  - "acceptor_fraction == 0.9"',
                                                       "constraints[1]", "cannot hold inside the parameter bounds"),
    "outcome_constraint_on_an_unknown_quantity": case("instrument:\n", 'outcome_constraints: ["pce >= 1"]\ninstrument:\n',
                                                      "outcome_constraints[0]", "unknown quantity 'pce': an outcome "
                                                      "constraint names an objective or a value the instrument measures",
                                                      at="outcome_constraints"),
    "missing_required_section": case("budget: {trials: 20, wall_time: 2 h}\n", "", "budget", "required key 'budget' is missing", at="name:"),
    "unknown_parameter_type": case("{type: float, low: 0.2, high: 0.8}", "{type: flaot, low: 0.2, high: 0.8}",
                                   "space.acceptor_fraction", "unknown type 'flaot'; use one of: float, int, choice, fixed; did you mean 'float'?"),
    "parameter_without_type": case("{type: float, low: 0.2, high: 0.8}", "{low: 0.2, high: 0.8}",
                                   "space.acceptor_fraction", "missing key 'type'", at="acceptor_fraction"),
    "wall_time_without_a_unit": case("wall_time: 2 h", "wall_time: 2", "budget.wall_time", "expected a duration with a unit"),
    "serial_keys_for_a_declared_driver": case("  options: {averages: 64}", "  options: {averages: 64}\n  start: INIT",
                                              "instrument.start", "only for driver: serial"),
    "two_objectives_with_the_single_objective_acquisition": case("seed: 1}", "seed: 1, acquisition: qLogNEI}", "planner.acquisition",
                                                                 "qLogNEI needs one objective"),
    "misspelled_objective_direction": case("{direction: maximize, unit: ns}", "{direction: maximise, unit: ns}",
                                           "objectives.tau_half.direction", "did you mean 'maximize'?"),
    "instrument_setting_missing_from_the_space": case("  acceptor_fraction: {type: float, low: 0.2, high: 0.8}\n", "",
                                                      "space", "the trmc instrument needs a value for 'acceptor_fraction'",
                                                      at="space:"),
    "serial_parameter_without_a_set_command": Case((('set: {temp: "TEMP {value}", flow: "FLOW {value}"}', 'set: {temp: "TEMP {value}"}'),
                                                    ("    flow: {min: 0, max: 20, unit: sccm}\n", "")),
                                                   "space.flow", "flow: {type", "has no command for 'flow': add instrument.set.flow",
                                                   SERIAL),
    "serial_set_command_for_an_unknown_parameter": case('flow: "FLOW {value}"}', 'flow: "FLOW {value}", pressure: "P {value}"}',
                                                        "instrument.set.pressure", "'pressure' is not a parameter of the space",
                                                        at="pressure", base=SERIAL),
    "serial_envelope_in_an_incompatible_unit": case("temp: {min: 20, max: 450, unit: degC}", "temp: {min: 20, max: 450, unit: mbar}",
                                                    "space.temp.unit", "not compatible with the serial instrument's unit 'mbar'",
                                                    at="temp: {type", base=SERIAL),
    "serial_without_measure_section": case('  measure: {r: {query: "RES?", unit: ohm}}\n', "", "instrument.measure",
                                           "a serial instrument needs a measure section", at="instrument:", base=SERIAL),
    "serial_wait_pattern_not_a_regex": case("  envelope:", '  wait: {query: "STAT?", until: "^(IDLE"}\n  envelope:',
                                            "instrument.wait.until", "not a valid regular expression", base=SERIAL, at="until"),
    "serial_misspelled_key_inside_a_measure": case('measure: {r: {query: "RES?"', 'measure: {r: {qeury: "RES?"',
                                                   "instrument.measure.r.qeury", "unknown key 'qeury'; did you mean 'query'?",
                                                   base=SERIAL, at="qeury"),
    "serial_misspelled_limit": case("temp: {min: 20, max: 450, unit: degC}", "temp: {min: 20, mxa: 450, unit: degC}",
                                    "instrument.envelope.temp.mxa", "unknown key 'mxa'; did you mean 'max'?", base=SERIAL),
    "serial_limit_with_a_unit_but_no_limit_unit": case("temp: {min: 20, max: 450, unit: degC}", "temp: {min: 20 degC, max: 450}",
                                                       "instrument.envelope.temp.min", "so the limit needs one", base=SERIAL),
    "serial_polling_wait_without_a_timeout": case("  envelope:", '  wait: {query: "STAT?", until: "^IDLE"}\n  envelope:',
                                                  "instrument.wait.timeout", "a polling wait needs `timeout`", base=SERIAL, at="until"),
    "serial_connection_to_an_unknown_emulator": case("connection: loop://", "connection: sim://oven", "instrument.connection",
                                                     "no emulated instrument 'oven'; known for driver serial: furnace", base=SERIAL),
    "emulated_serial_model_named_as_a_driver": case("  driver: trmc", '  driver: "sim:furnace"', "instrument.driver",
                                                    "use driver: serial with connection: sim://furnace"),
    "lookup_without_a_candidate_table": case('driver: "sim:lookup"', 'driver: "sim:lookup"', "instrument.driver",
                                             "sim:lookup reveals rows of a candidate table", at="driver:",
                                             base=POOL.replace("candidates: {path: pool.csv}\n", "")),
    "missing_candidate_file": case("path: pool.csv", "path: nowhere.csv", "candidates.path", "does not exist", base=POOL),
    "candidate_columns_not_matching": case("  group: {type: int", "  period: {type: int", "candidates.path",
                                           "no column for parameter 'period'", at="path: pool.csv", base=POOL),
    "candidate_rows_outside_bounds": case("low: 0.5, high: 2.5", "low: 0.5, high: 1.8", "candidates.path",
                                          "1 candidate rows have radius not inside space.radius [0.5, 1.8] (first: data row 2",
                                          at="path: pool.csv", base=POOL),
    "candidate_column_mapping_to_a_missing_header": case("{path: pool.csv}", "{path: pool.csv, columns: {radius: r_A}}",
                                                         "candidates.columns.radius", "no column 'r_A'", at="path: pool.csv", base=POOL),
}


def build(tmp_path: Path, c: Case) -> tuple[Path, int]:
    text = c.base
    for old, new in c.edits:
        assert old in text, f"edit target {old!r} not in the base protocol"
        text = text.replace(old, new, 1)
    (tmp_path / "pool.csv").write_text(POOL_CSV)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if c.at in line]
    assert lines, f"marker {c.at!r} not in the broken text"
    return path, lines[0]


def problems_from_library(path: Path) -> list[ProtocolProblem]:
    try:
        protocol = load_protocol(path)
    except ProtocolError as e:
        return e.problems
    return validate_protocol(protocol).problems


@pytest.mark.parametrize("base", [BASE, POOL, SERIAL])
def test_the_base_protocols_are_valid(tmp_path: Path, base: str) -> None:
    path, _ = build(tmp_path, Case((), "", "name:", "", base))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output + result.stderr
    assert problems_from_library(path) == []


@pytest.mark.parametrize("name", CASES)
def test_bad_input_through_the_cli(tmp_path: Path, name: str) -> None:
    c = CASES[name]
    path, line = build(tmp_path, c)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    field = f" {c.field}: " if c.field else " "
    matching = [text for text in lines if text.startswith(f"{path}:{line}:") and field in text and c.message in text]
    assert matching, f"no line at {path}:{line} naming {c.field!r} with {c.message!r} in:\n{result.stderr}"


@pytest.mark.parametrize("name", CASES)
def test_bad_input_through_the_library(tmp_path: Path, name: str) -> None:
    c = CASES[name]
    path, line = build(tmp_path, c)
    problems = problems_from_library(path)
    assert any(p.line == line and p.field == c.field and c.message in p.message and p.file == str(path) for p in problems), problems
    assert all(p.line >= 1 and p.col >= 1 for p in problems)


def test_every_problem_in_a_file_is_reported_in_one_pass(tmp_path: Path) -> None:
    text = (BASE.replace("low: 60, high: 200", "low: 260, high: 200")
            .replace("values: [chlorobenzene, chloroform]", "values: []")
            .replace("stop:", "stpo:")
            .replace("instrument_fault_retries: 2", "instrument_fault_retries: -3"))
    path = tmp_path / "many.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    fields = [p.field for p in err.value.problems]
    assert fields == ["space.anneal_temp.low", "space.solvent.values", "stpo", "failures.instrument_fault_retries"]
    assert str(err.value).splitlines()[0].startswith(f"{path}:5:")


def test_every_duplicate_key_is_reported(tmp_path: Path) -> None:
    text = BASE.replace("stop: {no_improvement: 5}", "stop: {no_improvement: 5, no_improvement: 6}") + "approval: every\n"
    path = tmp_path / "dups.yaml"
    path.write_text(text)
    problems = problems_from_library(path)
    assert [(p.field, p.line) for p in problems] == [("stop.no_improvement", 20), ("approval", 23)]
    assert all("duplicate key" in p.message for p in problems)


# Nested aliases ("billion laughs"): seven levels of ten expand to 10^7 values.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"# only a comment\n", "the file is empty"),
        (b"- name: x\n- space: {}\n", "the top level must be a mapping"),
        (b"just a sentence\n", "the top level must be a mapping"),
        (b"name: caf\xe9\n", "not UTF-8 text"),
        (b"name: x\nspace:\n\tx: 1\n", "YAML syntax error: found character '\\t'"),
        (LAUGHS.encode(), "the document expands to more than 100000 values"),
        (b"name: x\nloop: &a {again: *a}\n", "unknown key 'loop'"),  # an alias inside itself: no recursion
        (b"? [name]\n: x\n", "unknown key"),  # a complex key
    ],
)
def test_files_that_are_not_protocols(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{path}:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_directory_are_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml"), str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory",
        f"{tmp_path}: cannot read: Is a directory",
    ]


@pytest.mark.parametrize("name", ["code_in_a_constraint", "duplicate_parameter_name", "yaml_syntax_error"])
def test_bad_input_in_a_real_process(tmp_path: Path, name: str) -> None:
    c = CASES[name]
    path, line = build(tmp_path, c)
    done = subprocess.run([sys.executable, "-m", "closedloop", "validate", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.startswith(f"{path}:{line}:") and c.message in done.stderr
