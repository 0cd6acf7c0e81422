"""The example MBE campaign (protocols/mbe_srruo3.yaml) with its Sr and Ru cells on Eurotherm controllers
over Modbus: `closedloop emulate mbe --pty --modbus-tcp 0` in one process, `closedloop run` in another,
SIGKILLed in the middle of a growth, then `closedloop resume` to the end. Asserted on the chamber's record
(what it took), on the campaign file's command journal (what went over Modbus) and on trial states."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from closedloop.controller.store.campaign_store import CampaignStore
from tests import paths
from tests.controller.cli.test_mbe_live import SCALE, closedloop, finished, growing, mbe_protocol, read_record


@contextmanager
def emulator_with_modbus(record: Path) -> Iterator[tuple[str, str]]:
    """`closedloop emulate mbe --pty --modbus-tcp 0 ...`; yields (pty path, modbus+tcp://HOST:PORT)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "emulate", "mbe", "--pty", "--modbus-tcp", "0", "--time-scale",
         str(SCALE), "--seed", "5", "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=paths.ROOT)
    try:
        assert process.stdout is not None
        line, modbus = process.stdout.readline(), process.stdout.readline()
        assert line.startswith("listening on /dev/") and modbus.startswith("modbus listening on "), line + modbus
        yield line.split()[-1], modbus.split()[3]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.mark.slow
def test_a_campaign_with_modbus_cells_survives_sigkill_mid_growth_and_resumes(tmp_path: Path) -> None:
    db, record = tmp_path / "srruo3.sqlite", tmp_path / "chamber.jsonl"
    with emulator_with_modbus(record) as (pty, modbus):
        protocol = mbe_protocol(tmp_path)
        cells = (f'cells: {{sr_cell_temp: {{modbus: "{modbus}?unit=1", encoding: float32}}, '
                 f'ru_cell_temp: {{modbus: "{modbus}?unit=2"}}}}')
        protocol.write_text(protocol.read_text().replace("options: {ex_situ_s: 1800}", f"options: {{ex_situ_s: 1800, {cells}}}"))
        code, out, _ = finished(closedloop("validate", str(protocol), cwd=tmp_path))
        assert code == 0 and "valid: srruo3-mbe" in out

        run = closedloop("run", str(protocol), "--port", pty, "--time-scale", str(SCALE), "--db", str(db),
                         "--quiet", cwd=tmp_path)
        deadline = time.monotonic() + 120
        while not growing(read_record(record)):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the growth never started"
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)

        # The kill left the chamber growing: ozone on, shutters open, cells hot. Resuming makes it safe
        # before anything else is sent (journaled as a campaign event), then the killed growth runs again.
        code, out, err = finished(closedloop("resume", str(db), "--quiet", cwd=tmp_path))
        assert code == 0, err
        assert "stopped: budget: 3 of 3 trials done" in out

    with CampaignStore.open(db) as store:
        trials = store.trials()
        done = [t for t in trials if t.state in ("measured", "failed")]  # a wrong-phase film is a result
        [killed] = [t for t in trials if t.state == "abandoned"]
        assert len(done) == 3 and any(t.conditions == killed.conditions and t.retry_of == killed.id for t in done)
        made_safe = [e for e in store.events(kinds=["safe_state"]) if f"during trial {killed.id}" in (e["detail"] or "")]
        assert made_safe, "resume did not put the chamber in its safe state first"
        [retry] = [t for t in done if t.retry_of == killed.id]
        killed_last = max(c["id"] for c in store.commands(killed.id))
        retry_first = min(c["id"] for c in store.commands(retry.id))
        between = [c["text"] for c in store.commands() if killed_last < c["id"] < retry_first
                   and c["trial_id"] is None and c["direction"] == "tx"]
        assert "OZONE:FLOW 0" in between  # safe between the kill and the growth run again
        for trial in [killed, *done]:
            sent = [c["text"] for c in store.commands(trial.id) if c["direction"] == "tx"]
            ru = round(trial.conditions["ru_cell_temp"] * 10)
            # The Ru cell's rate limit then setpoint went over Modbus (one decimal), the Sr cell's as floats,
            # and neither over the growth controller's line; the substrate stayed on the line.
            assert sent.index("RU_CELL unit 2 WRITE 35 [100]") < sent.index(f"RU_CELL unit 2 WRITE 2 [{ru}]")
            assert "SR_CELL unit 1 WRITE 32772 [17387, 0]" in sent  # 470.0 degC as a float at 0x8000 + 2*2
            assert not any(t.startswith(("RU_CELL:", "SR_CELL:")) for t in sent)
            assert any(t.startswith("SUBSTRATE:SP ") for t in sent)
    # What the chamber took: every Ru setpoint is a trial's (to a tenth of a degree) or the idle one.
    taken = read_record(record)
    targets = {round(t.conditions["ru_cell_temp"], 1) for t in trials} | {1200.0}
    ru_setpoints = [float(r.value) for r in taken if r.device == "RU_CELL" and r.field == "SP"]
    assert ru_setpoints and set(ru_setpoints) <= targets
    assert all(float(r.value) == 10.0 for r in taken if r.device == "RU_CELL" and r.field == "RATE")
