"""The fuzz test at length: many malformed inputs, each through a real `closedloop` process.

The same generators as tests/test_fuzz.py (tests/fuzz.py): broken protocols for `validate`, broken
results CSVs for `tell --csv` and `import --csv`, broken campaign files for `status` and `export`. Each example runs in a
fresh subprocess, so a crash, a hang (killed after --timeout s) or a memory blow-up shows as what a user
would see; wall time, CPU time and peak memory (max RSS) are measured per example from the child (its
peak includes this launcher's size at the fork, about 60 MiB, so it is an upper bound). Every
broken promise is printed with its input and counted. Writes benchmarks/results/fuzz_inputs.json.

    python benchmarks/fuzz_inputs.py [--examples 100] [--seed 19] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fuzz: the generators are shared with the test suite

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import fuzz, paths  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz_inputs.json"
TEMPLATE = """
import sys
from closedloop.controller.campaign import Campaign
with Campaign.create(sys.argv[1], sys.argv[2]) as c:
    c.ask(3)
    c.tell(1, {"phi_sum_mu_max": "2.1e-3", "tau_half": "180 ns"})
"""  # the campaign every tell/status/export example starts from: trials 1-3 handed out, trial 1 told


def run_cli(args: list[str], campaign: Path | None, timeout: float) -> tuple[fuzz.Outcome, float, int]:
    """One `closedloop ARGS` in a fresh process: its outcome, CPU seconds and peak memory (KiB), read
    from the child's own rusage (os.wait4); killed after `timeout` s."""
    before = fuzz.file_digest(campaign) if campaign is not None else ""
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen([sys.executable, "-m", "closedloop", *args], stdout=output, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen, so it does not wait again
        output.seek(0)
        text = output.read().decode(errors="replace")
    seconds = time.monotonic() - started
    changed = campaign is not None and fuzz.file_digest(campaign) != before
    return fuzz.Outcome(args[0], proc.returncode, text, seconds, changed), usage.ru_utime + usage.ru_stime, usage.ru_maxrss


class Tally:
    """Per command: how many examples, exit codes, broken promises, and time/memory figures."""

    def __init__(self) -> None:
        self.by_command: dict[str, dict[str, list]] = {}

    def add(self, outcome: fuzz.Outcome, cpu_s: float, max_rss_kb: int, problems: list[str], shown: str) -> None:
        entry = self.by_command.setdefault(outcome.command, {"exit": [], "wall_s": [], "problems": []})
        entry["exit"].append(outcome.exit_code)
        entry["wall_s"].append(outcome.seconds)
        entry.setdefault("max_rss_kb", []).append(max_rss_kb)
        entry.setdefault("cpu_s", []).append(cpu_s)
        if problems:
            entry["problems"].append({"input": shown[:300], "problems": problems, "output": outcome.output[-300:]})
            print(f"  BROKEN {outcome.command}: {problems} <- {shown[:120]!r}", flush=True)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for command, e in self.by_command.items():
            out[command] = {
                "examples": len(e["exit"]),
                "exit_codes": {str(code): e["exit"].count(code) for code in sorted(set(e["exit"]), key=str)},
                "broken": len(e["problems"]),
                "wall_s_median": round(statistics.median(e["wall_s"]), 3),
                "wall_s_max": round(max(e["wall_s"]), 3),
                "cpu_s_median": round(statistics.median(e["cpu_s"]), 3),
                "max_rss_mib_max": round(max(e["max_rss_kb"]) / 1024, 1),
                "problems": e["problems"][:20],
            }
        return out


def fuzz_with(strategy: st.SearchStrategy, examples: int, seed_value: int, check: Callable[..., None]) -> None:
    """Run `check` on `examples` drawn from `strategy`; every example runs (failures are tallied, not raised)."""
    runner = seed(seed_value)(settings(max_examples=examples, database=None, deadline=None,
                                       suppress_health_check=list(HealthCheck))(given(strategy)(check)))
    runner()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per command")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a command counts as hung")
    args = parser.parse_args()
    tally = Tally()
    started, load_before = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = work / "template.sqlite"
        # In a child, so this process stays small: a child's peak memory counts its parent's at the fork.
        subprocess.run([sys.executable, "-c", TEMPLATE, str(paths.PROTOCOLS / "trmc_opv_blend.yaml"), str(template)],
                       check=True)

        def record(command_args: list[str], campaign: Path | None, shown: str, may_change: bool = False) -> None:
            outcome, cpu_s, rss = run_cli(command_args, campaign, args.timeout)
            tally.add(outcome, cpu_s, rss, outcome.problems(may_change=may_change, max_seconds=args.timeout), shown)

        def protocol(data: bytes) -> None:
            path = work / "protocol.yaml"
            path.write_bytes(data)
            record(["validate", str(path)], None, data.decode(errors="replace"))

        def results(data: bytes) -> None:
            campaign = fuzz.broken_copy(template, [], work / "tell.sqlite")
            path = work / "results.csv"
            path.write_bytes(data)
            record(["tell", str(campaign), "--csv", str(path)], campaign, repr(data), may_change=True)

        def earlier(data: bytes) -> None:
            campaign = fuzz.broken_copy(template, [], work / "import.sqlite")
            path = work / "earlier.csv"
            path.write_bytes(data)
            record(["import", str(campaign), "--csv", str(path)], campaign, repr(data), may_change=True)

        def campaign_file(mutations: list[fuzz.Mutation]) -> None:
            campaign = fuzz.broken_copy(template, mutations, work / "broken.sqlite")
            shown = "; ".join(m.__name__ for m in mutations)
            record(["status", str(campaign)], campaign, shown)
            record(["export", str(campaign), "-o", str(work / "out.csv")], campaign, shown)

        print(f"fuzzing {args.examples} examples per command, seed {args.seed}", flush=True)
        fuzz_with(fuzz.protocol_bytes(), args.examples, args.seed, protocol)
        fuzz_with(fuzz.results_csv_bytes(), args.examples, args.seed, results)
        fuzz_with(fuzz.earlier_results_csv_bytes(), args.examples, args.seed, earlier)
        fuzz_with(fuzz.campaign_mutations(template), args.examples, args.seed, campaign_file)
    summary = tally.summary()
    report = {
        "benchmark": "fuzz_inputs",
        "examples_per_command": args.examples,
        "seed": args.seed,
        "timeout_s": args.timeout,
        "commands": summary,
        "broken_total": sum(int(s["broken"]) for s in summary.values()),  # type: ignore[call-overload]
        "wall_s_total": round(time.monotonic() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": os.getloadavg()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    printable = {k: {kk: vv for kk, vv in v.items() if kk != "problems"} for k, v in summary.items()}
    print(json.dumps({**report, "commands": printable}, indent=2))


if __name__ == "__main__":
    main()
