"""Loading good protocols: the model, unit conversion, and the helpers the engine calls."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from closedloop.controller.protocol.model import Protocol, load_protocol, parse_protocol_text
from closedloop.controller.protocol.validate import validate_protocol
from closedloop.drivers.trmc import TRMC_ENVELOPE, TrmcOptions
from closedloop.planners.space import ChoiceParameter, FixedParameter, FloatParameter, IntParameter
from tests import paths

PROTOCOLS = paths.PROTOCOLS


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


TRMC_IN_KELVIN = textwrap.dedent("""\
    name: kelvin
    space:
      acceptor_fraction: {type: float, low: 0.3, high: 0.7}
      anneal_temp: {type: float, low: 350 K, high: "200 degC", unit: K}
      anneal_time: {type: float, low: 0.05 h, high: 30, unit: min}
      spin_speed: {type: int, low: 600, high: 4000, step: 200, unit: rpm}
      solvent: {type: fixed, value: chloroform}
    objectives:
      phi_sum_mu_max: {direction: maximize, unit: m^2/(V*s), log: true}
      tau_half: {direction: maximize, unit: us, target: 500 ns}
    outcome_constraints: ["tau_half >= 100 ns"]
    instrument:
      driver: trmc
      connection: /dev/ttyUSB0
      options: {wavelength: 0.5 um, averages: 64}
    budget: {trials: 12, wall_time: 90 min}
    """)


def test_example_trmc_protocol_becomes_the_planner_problem() -> None:
    protocol = load_protocol(PROTOCOLS / "trmc_opv_blend.yaml")
    problem = protocol.to_problem()
    space = problem.space
    assert space.names == ["acceptor_fraction", "anneal_temp", "anneal_time", "spin_speed", "solvent"]
    assert space.parameter("anneal_temp") == FloatParameter("anneal_temp", 60.0, 200.0, False)
    assert space.parameter("spin_speed") == IntParameter("spin_speed", 600, 4000, 100)
    assert space.parameter("solvent") == ChoiceParameter("solvent", ("chlorobenzene", "o-dichlorobenzene", "chloroform"))
    (constraint,) = space.constraints
    assert constraint.coefficients == {"anneal_temp": 1.0, "anneal_time": 2.0} and constraint.rhs == 220.0
    assert [(o.name, o.maximize, o.log) for o in problem.objectives] == [("phi_sum_mu_max", True, True)]
    pareto = load_protocol(PROTOCOLS / "trmc_opv_pareto.yaml").to_problem()
    assert pareto.space == space  # the same films, judged on the trade-off with the lifetime
    assert [(o.name, o.maximize, o.log) for o in pareto.objectives] == [("phi_sum_mu_max", True, True), ("tau_half", True, False)]
    assert protocol.wall_time_s == 12 * 3600
    assert protocol.approval_mode == "none"
    assert protocol.planner.initial.n == 8 and protocol.planner.seed == 1
    assert protocol.description_of_instrument().envelope is TRMC_ENVELOPE


def test_quantities_are_converted_into_the_declared_unit(tmp_path: Path) -> None:
    protocol = load_protocol(write(tmp_path, TRMC_IN_KELVIN))
    temp = protocol.space["anneal_temp"]
    assert (temp.low, temp.high) == (350.0, pytest.approx(473.15))  # "200 degC" as kelvin, offset included
    assert protocol.space["anneal_time"].low == pytest.approx(3.0)  # 0.05 h in min
    tau = protocol.objectives["tau_half"]
    assert tau.target == pytest.approx(0.5)  # 500 ns in us
    (outcome,) = protocol.to_problem().outcome_constraints
    assert (outcome.name, outcome.op, outcome.bound) == ("tau_half", ">=", pytest.approx(0.1))
    assert protocol.wall_time_s == 5400.0


def test_conditions_go_to_the_instrument_in_its_units(tmp_path: Path) -> None:
    protocol = load_protocol(write(tmp_path, TRMC_IN_KELVIN))
    sent = protocol.to_instrument_units(
        {"acceptor_fraction": 0.5, "anneal_temp": 400.0, "anneal_time": 10.0, "spin_speed": 1200, "solvent": "chloroform"}
    )
    assert sent["anneal_temp"] == pytest.approx(126.85)  # K -> degC, the envelope's unit
    assert sent["spin_speed"] == 1200 and isinstance(sent["spin_speed"], int)  # same unit: untouched
    assert sent["solvent"] == "chloroform"
    TRMC_ENVELOPE.check(sent)  # what the driver receives is inside its envelope
    options = protocol.instrument_options()
    assert isinstance(options, TrmcOptions)  # the driver's own options model, quantities in its units
    assert (options.wavelength, options.averages) == (pytest.approx(500.0), 64)


def test_identity_of_the_protocol_text(tmp_path: Path) -> None:
    path = write(tmp_path, TRMC_IN_KELVIN)
    protocol = load_protocol(path)
    assert protocol.path == path
    assert protocol.text == path.read_text()
    assert protocol.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    again = parse_protocol_text(protocol.text, path)
    assert again.to_problem() == protocol.to_problem() and again.sha256 == protocol.sha256


def test_fixed_parameters_and_constraints_over_them(tmp_path: Path) -> None:
    protocol = load_protocol(PROTOCOLS / "mbe_srruo3.yaml")
    space = protocol.to_problem().space
    assert space.parameter("sr_cell_temp") == FixedParameter("sr_cell_temp", 470.0)
    assert protocol.trusted_region_bounds() == {"substrate_temp": (650.0, 820.0), "ru_cell_temp": (1840.0, 1885.0)}
    assert protocol.approval_mode == "outside_region"
    # A fixed numeric parameter inside a constraint is a constant.
    text = (PROTOCOLS / "mbe_srruo3.yaml").read_text().replace("objectives:", 'constraints: ["substrate_temp + sr_cell_temp <= 1250"]\nobjectives:')
    (c,) = parse_protocol_text(text, tmp_path / "m.yaml").to_problem().space.constraints
    assert c.coefficients == {"substrate_temp": 1.0} and c.rhs == 1250 - 470


def test_trusted_region_may_use_quantities(tmp_path: Path) -> None:
    text = TRMC_IN_KELVIN + textwrap.dedent("""\
        approval:
          mode: outside_region
          trusted_region:
            anneal_temp: {low: 100 degC, high: 420}
        """)
    protocol = load_protocol(write(tmp_path, text))
    low, high = protocol.trusted_region_bounds()["anneal_temp"]
    assert low == pytest.approx(373.15) and high == 420.0


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    protocol = load_protocol(write(tmp_path, """\
        name: minimal
        space: {x1: {type: float, low: -5, high: 10}, x2: {type: float, low: 0, high: 15}}
        objectives: {y: {direction: minimize}}
        instrument: {driver: "sim:branin"}
        budget: {trials: 10}
        """))
    assert protocol.planner.acquisition == "auto" and protocol.planner.batch_size == 1
    assert protocol.planner.initial.method == "sobol" and protocol.planner.initial.n == 5
    assert protocol.stop.no_improvement is None and protocol.stop.target_reached is True
    assert protocol.failures.instrument_fault_retries == 2 and protocol.failures.on_fault == "pause"
    assert protocol.failures.failed_samples == "keep"
    assert protocol.approval_mode == "none" and protocol.trusted_region_bounds() == {}
    assert protocol.wall_time_s is None and protocol.candidates_frame() is None
    assert protocol.instrument.connection is None  # a simulator needs no port
    assert protocol.description_of_instrument().measures == {"y": ""}
    assert protocol.to_instrument_units({"x1": 1.5, "x2": 2}) == {"x1": 1.5, "x2": 2}


def test_pool_mode_reads_the_table_relative_to_the_protocol(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pool.csv").write_text("name,radius (A),temp,Tm\nA,1.0,10,100\nB,2.0,20,300\nC,1.5,30,200\n")
    protocol = load_protocol(write(tmp_path, """\
        name: pool
        space:
          radius: {type: float, low: 0.5, high: 2.5, unit: angstrom}
          temp: {type: int, low: 10, high: 30, step: 10}
        candidates: {path: data/pool.csv, columns: {radius: "radius (A)", Tm_K: Tm}}
        objectives: {Tm_K: {direction: maximize, unit: K}}
        instrument: {driver: "sim:lookup"}
        budget: {trials: 3}
        planner: {initial: {n: 1}}
        """))
    assert protocol.candidates_path == tmp_path / "data" / "pool.csv"
    frame = protocol.candidates_frame()
    assert list(frame.columns) == ["name", "radius", "temp", "Tm_K"]
    assert frame["radius"].tolist() == [1.0, 2.0, 1.5]
    description = protocol.description_of_instrument()
    assert description.measures == {"Tm_K": "K"}
    assert set(description.envelope.limits) == {"radius", "temp"}
    assert description.envelope.limits["radius"].unit == "angstrom"


def test_example_pool_protocol_uses_the_shipped_table() -> None:
    protocol = load_protocol(PROTOCOLS / "pool_melting_points.yaml")
    frame = protocol.candidates_frame()
    assert len(frame) == 248
    assert set(protocol.space) <= set(frame.columns) and "Tm_K" in frame.columns
    assert frame["Tm_K"].max() == pytest.approx(3273.15)  # AlN, the best compound of the pool


def test_serial_instrument_is_described_by_the_protocol() -> None:
    protocol = load_protocol(PROTOCOLS / "serial_furnace.yaml")
    section = protocol.instrument
    assert section.serial.baudrate == 9600 and section.serial.timeout == 2.0
    assert section.set["anneal_temp"].command == "SOUR:TEMP {value:.1f}" and section.set["anneal_temp"].unit is None
    assert section.set["anneal_time"].unit == "s"
    assert section.start == ["INIT"]
    assert section.wait.until == "^IDLE" and section.wait.timeout == 4 * 3600
    assert section.measure["sheet_resistance"].query == "FETC:RES?"
    assert section.safe_state == ["SOUR:TEMP 25", "SOUR:FLOW 0", "ABOR"]
    description = protocol.description_of_instrument()
    assert description.measures == {"sheet_resistance": "ohm"}
    limit = description.envelope.limits["anneal_temp"]
    assert (limit.min, limit.max, limit.unit, limit.max_step) == (20.0, 450.0, "degC", 300.0)


def test_serial_shorthands_and_parameters_mapped_without_limits(tmp_path: Path) -> None:
    protocol = load_protocol(write(tmp_path, """\
        name: shorthand
        space:
          temp: {type: float, low: 20, high: 80, unit: degC}
          gas: {type: choice, values: [N2, Ar]}
        objectives: {r: {direction: minimize, unit: ohm}}
        instrument:
          driver: serial
          connection: loop://
          identify: "*IDN?"
          set: {temp: "TEMP {value}", gas: "GAS {value}"}
          start: INIT
          wait: 30 s
          measure: {r: "MEAS:RES?"}
          safe_state: ABOR
        budget: {trials: 5}
        planner: {initial: {n: 2}}
        """))
    section = protocol.instrument
    assert section.identify.query == "*IDN?" and section.wait.duration == 30.0  # a fixed wait
    assert section.start == ["INIT"] and section.safe_state == ["ABOR"]
    assert section.measure["r"].query == "MEAS:RES?" and section.measure["r"].parse == "float"
    limits = protocol.description_of_instrument().envelope.limits
    assert (limits["temp"].min, limits["temp"].max, limits["temp"].unit) == (None, None, "degC")
    assert limits["gas"].allowed == ("N2", "Ar")


def test_serial_limits_with_units_a_fixed_delay_and_whole_number_readings(tmp_path: Path) -> None:
    protocol = load_protocol(write(tmp_path, """\
        name: serial-features
        space: {temp: {type: float, low: 300, high: 500, unit: K}}
        objectives: {count: {direction: maximize}}
        instrument:
          driver: serial
          connection: loop://
          set: {temp: "TEMP {value:.1f}"}
          wait: {delay: 10 s}
          measure:
            count: {query: "CNT?", parse: int}
            r: {query: "SUMM?", pattern: "R=([0-9.]+)", unit: ohm}
          envelope: {temp: {unit: degC, min: 293.15 K, max: 250 degC, max_step: 90 degF}}
        budget: {trials: 5}
        planner: {initial: {n: 2}}
        """))
    assert protocol.instrument.wait.delay == 10.0 and protocol.instrument.wait.query is None
    assert protocol.instrument.measure["count"].parse == "int" and protocol.instrument.measure["r"].parse == "float"
    limit = protocol.description_of_instrument().envelope.limits["temp"]
    assert (limit.min, limit.max, limit.max_step, limit.unit) == pytest.approx((20.0, 250.0, 50.0, "degC"))
    assert protocol.to_instrument_units({"temp": 400.0}) == {"temp": pytest.approx(126.85)}  # K to the envelope's degC
    assert validate_protocol(protocol).valid

def test_protocol_model_is_frozen() -> None:
    protocol = load_protocol(PROTOCOLS / "trmc_opv_blend.yaml")
    with pytest.raises(ValueError):
        protocol.name = "changed"  # type: ignore[misc]
    assert isinstance(protocol, Protocol)
