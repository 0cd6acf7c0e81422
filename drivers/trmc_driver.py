"""The TRMC station driver: prepare a film, tune the cavity, fire the laser, read the averaged transient
and analyze it, all over the station's SCPI-like wire protocol (see simulators/trmc/wire.py for the
command set the station's control PC speaks).

A trial: excitation settings (so the film's absorbance is measured where it will be excited), the
recipe (`SAMP:*`), spin-coat + anneal (`SAMP:PREP`), load (`SAMP:LOAD`; with `manual_loading: true`
the operator confirms first), `CAV:TUNE` and its readings, then `ACQ:SING` with the shutter open only
for the shots. Long operations are awaited by sleeping their nominal duration on the trial's clock and
then polling `*OPC?`. The record comes back as a binary block (or, with `word_format: ASCII`, as a line
of comma-separated values, for links that carry only text, such as a pyvisa-sim file), is scaled with
the waveform preamble and analyzed by `drivers.trmc_analysis`; the raw record and the calibration are
stored as artifacts, so a later analysis version can recompute the values (`closedloop reanalyze`).

On a line (`sample_from: line`) the film was made by earlier steps: no recipe and no `SAMP:PREP`; the
driver labels the film with `SAMP:ID <trial>` and loads it (`SAMP:LOAD`, which then includes the transfer
from the line: LINE_LOAD_S), then tunes and measures as above.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from closedloop.drivers.base import (
    DriverDescription,
    InstrumentContext,
    InstrumentFault,
    Journal,
    Measurement,
    Value,
    require_settings,
)
from closedloop.drivers.scpi import ScpiParseError, decode_block, parse_list, parse_number
from closedloop.drivers.scpi_station import ScpiStation
from closedloop.drivers.transport import Port
from closedloop.drivers.trmc import PROCESS_PARAMETERS, TrmcOptions, trmc_description
from closedloop.drivers.trmc_analysis import analyze_to_measurement

log = logging.getLogger(__name__)

# Nominal durations of the station's operations (s): the driver sleeps these before polling *OPC?.
SPIN_COAT_S = 60.0
LOAD_S = 30.0
LINE_LOAD_S = 270.0  # on a line: fetch the film from the hot plate, cool it, through the antechamber, load
TUNE_S = 20.0
SHOT_RATE_HZ = 10.0
_SAMPLE_COMMANDS = {
    "acceptor_fraction": "SAMP:ACC {:.4f}",
    "anneal_temp": "SAMP:TEMP {:.2f}",
    "anneal_time": "SAMP:TIME {:.3f}",
    "spin_speed": "SAMP:SPIN {:.0f}",
    "solvent": "SAMP:SOLV {}",
}
_WORD_FORMATS = {"INT16": "<i2", "FLOAT32": "<f4"}  # binary blocks; ASCII is a line of values
_JOURNALED_CHARS = 80  # of an ASCII record


class TrmcDriver(ScpiStation):
    """The TRMC station over its link: a device path, socket://HOST:PORT, or an in-process `port`."""

    name = "the TRMC station"

    def __init__(
        self, connection: str, options: TrmcOptions | Mapping[str, Any] | None = None, *, port: Port | None = None
    ) -> None:
        """`options` as a protocol gives them (validated here: a bad one raises ValueError naming it)."""
        self.options = options if isinstance(options, TrmcOptions) else TrmcOptions.model_validate(options or {})
        opts = self.options
        super().__init__(connection, baudrate=opts.baudrate, timeout=opts.timeout, retries=opts.retries,
                         poll_s=opts.poll_s, opc_margin_s=opts.opc_margin_s, port=port)
        self.on_line = self.options.sample_from == "line"

    def describe(self) -> DriverDescription:
        return trmc_description(self.options)

    def check(self, conditions: Mapping[str, Value]) -> None:
        """Refuse settings outside the envelope and, making films from a recipe, trials missing a process
        parameter (on a line, any process parameter: the film arrives made), before any I/O."""
        self.describe().envelope.check(conditions)
        if not self.on_line:
            require_settings(conditions, PROCESS_PARAMETERS, "the station needs it for every film: add it to the space or as a fixed parameter")

    # -- one trial -------------------------------------------------------------------------------

    def run(self, conditions: Mapping[str, Value], ctx: InstrumentContext) -> Measurement:
        self.check(conditions)
        opts = self.options
        averages = int(conditions.get("averages", opts.averages))
        wavelength = float(conditions.get("wavelength", opts.wavelength))
        fluence = float(conditions.get("fluence", opts.fluence))
        started = ctx.clock.now()
        self.transport.set_journal(ctx.journal)
        self.transport.follow_clock(ctx.clock)
        self._identify()
        self._send_all(["*CLS", "EXC:SHUT CLOS", f"EXC:WAV {wavelength:.3f}", f"EXC:FLU {fluence:.6E}"])
        if self.on_line:
            # The film the line's earlier steps labelled with this trial.
            self._send_all([f"SAMP:ID {ctx.trial_id}"])
            film = "from the line"
        else:
            recipe = [_SAMPLE_COMMANDS[name].format(conditions[name]) for name in PROCESS_PARAMETERS]
            # The film is labelled with its trial: a re-run after a crash is recognisably the same sample.
            self._send_all([*recipe, f"SAMP:ID {ctx.trial_id}"])
            self._operation("SAMP:PREP", SPIN_COAT_S + 60.0 * float(conditions["anneal_time"]), ctx.clock)
            film = (f"{conditions['solvent']}, acceptor {float(conditions['acceptor_fraction']):.2f}, "
                    f"{float(conditions['anneal_temp']):.0f} degC")
        if opts.manual_loading:
            ctx.confirm(f"load the film of trial {ctx.trial_id} ({film}) into the cavity and confirm")
        self._operation("SAMP:LOAD", LINE_LOAD_S if self.on_line else LOAD_S, ctx.clock)
        self._operation("CAV:TUNE", TUNE_S, ctx.clock)
        calibration = self._calibration(wavelength, fluence, averages)
        self._send_all([f"ACQ:AVER {averages}", f"WAV:FORM {opts.word_format.upper()}"])
        try:
            self._send_all(["EXC:SHUT OPEN"])
            self._operation("ACQ:SING", averages / SHOT_RATE_HZ, ctx.clock)
        finally:
            self.safe_state()
        time_s, dpr = self._read_record(ctx.journal)
        try:
            return analyze_to_measurement(
                time_s, dpr, calibration, instrument=self.instrument_id, duration_s=ctx.clock.now() - started
            )
        except ValueError as e:
            raise InstrumentFault(f"the station's record cannot be analyzed: {e}") from None

    def _number(self, query: str) -> float:
        reply = self.transport.query(query)
        try:
            value = parse_number(reply)
        except ScpiParseError as e:
            raise InstrumentFault(f"{query}: {e}") from None
        if not math.isfinite(value):
            raise InstrumentFault(f"{query} answered {reply!r}: the station has no valid reading")
        return value

    def _calibration(self, wavelength: float, fluence: float, averages: int) -> dict[str, float]:
        """The numbers that turn dPr/Pr into phi*sum(mu) (A, I0, F_light) and what the cavity was at."""
        f0, q, dark = self._number("CAV:F0?"), self._number("CAV:Q?"), self._number("CAV:PR?")
        sheet_sensitivity = self._number("CAV:SENS?")
        thickness_cm = self._number("SAMP:THK?") * 1e-7
        od = self._number("SAMP:OD?")
        self._check_errors("the cavity and sample readings")
        return {
            "A": sheet_sensitivity * thickness_cm,
            "I0": fluence,
            "F_light": (1.0 - 10.0 ** (-od)) / thickness_cm,
            "f0": f0,
            "Q": q,
            "tau_cav": q / (2.0 * math.pi * f0),
            "dark_power_mW": dark,
            "averages": float(averages),
            "wavelength": wavelength,
            "fluence": fluence,
            "od": od,
            "thickness_cm": thickness_cm,
        }

    def _read_record(self, journal: Journal) -> tuple[np.ndarray, np.ndarray]:
        """(time in s, dPr/Pr) from the preamble and the curve (a binary block, or a line of values with
        `word_format: ASCII`); a short, odd or unreadable curve is a fault naming CURV?."""
        preamble = self.transport.query("WAV:PRE?")
        try:
            x_inc, x_origin, y_inc, y_origin, points = (parse_number(v) for v in preamble.split(","))
        except (ScpiParseError, ValueError):
            raise InstrumentFault(
                f"WAV:PRE? answered {preamble!r}; expected 'x increment,x origin,y increment,y origin,points'"
            ) from None
        if not all(map(math.isfinite, (x_inc, x_origin, y_inc, y_origin, points))) or points < 1:
            raise InstrumentFault(f"WAV:PRE? answered {preamble!r}: no valid record on the station")
        word_format = self.options.word_format.upper()
        try:
            if word_format == "ASCII":
                samples = np.asarray(parse_list(self.transport.query("CURV?", journal=_abridged(journal))))
            else:
                samples = decode_block(self.transport.query_block("CURV?"), _WORD_FORMATS[word_format])
        except ScpiParseError as e:
            raise InstrumentFault(f"CURV?: {e}") from None
        if samples.size != int(points):
            raise InstrumentFault(f"CURV? returned {samples.size} samples but the preamble announced {int(points)}")
        self._check_errors("CURV?")
        time_s = x_origin + x_inc * np.arange(samples.size)
        return time_s, y_origin + y_inc * samples

    # -- after a trial ---------------------------------------------------------------------------

    def recover(self, trial_id: int, ctx: InstrumentContext) -> Measurement | None:
        """A film interrupted mid-trial is lost (it was annealed or measured only in part): re-run it."""
        return None

    def safe_state(self) -> None:
        """Close the laser shutter. Failures are logged, never raised."""
        try:
            self.transport.write("EXC:SHUT CLOS")
        except Exception as e:  # safe_state must never raise, whatever the link does
            log.warning("safe_state: closing the shutter of %s failed: %s", self.connection, e)


def _abridged(journal: Journal) -> Journal:
    """`journal` with long replies shortened: an ASCII record (thousands of values) is kept whole in the
    measurement's artifacts, so the journal notes its start and length, as it does for a binary block."""

    def record(direction: str, text: str) -> None:
        if direction == "rx" and len(text) > _JOURNALED_CHARS:
            text = f"{text[:_JOURNALED_CHARS]}... [{len(text)} chars]"
        journal(direction, text)

    return record
