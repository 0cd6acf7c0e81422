"""Round-trip cost of one query through SerialTransport, against an emulator that answers at once.

Starts `closedloop emulate furnace` as a separate process (on a pty, then on TCP), sends `*IDN?` N times
and records each query's wall time. The same loop with bare pyserial (write + read_until, no drain,
no guard, no journal) gives the floor set by the link and the emulator process; the difference is what
the transport itself adds (it can come out negative: read_until reads byte by byte, the transport reads
whatever is waiting). Writes benchmarks/results/serial_roundtrip.json.

    python benchmarks/serial_roundtrip.py [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import serial

from closedloop.drivers.transport import SerialTransport, TransportSettings

RESULTS = Path(__file__).parent / "results" / "serial_roundtrip.json"
SETTINGS = TransportSettings(read_terminator="\r\n", write_terminator="\r\n", timeout=1.0)
WARMUP = 50


@contextmanager
def emulator(*mode: str) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "closedloop", "emulate", "furnace", *mode],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.startswith("listening on "):
            raise RuntimeError(f"the emulator did not start: {first!r}")
        yield first.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def timed(query: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(WARMUP):
        query()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        query()
        samples.append(time.perf_counter() - start)
    samples.sort()
    ms = [s * 1e3 for s in samples]
    return {
        "n": n,
        "median_ms": round(statistics.median(ms), 4),
        "p95_ms": round(ms[int(0.95 * (n - 1))], 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "max_ms": round(ms[-1], 4),
    }


def measure(url: str, n: int) -> dict[str, dict[str, float]]:
    transport = SerialTransport(url, SETTINGS, journal=lambda direction, text: None)
    if not transport.query("*IDN?").startswith("KILNCO,"):
        raise RuntimeError(f"{url} is not answering as the furnace emulator")
    transport_stats = timed(lambda: transport.query("*IDN?"), n)
    transport.close()

    bare = serial.serial_for_url(url, timeout=1.0)

    def bare_query() -> bytes:
        bare.write(b"*IDN?\r\n")
        return bare.read_until(b"\r\n")

    bare_stats = timed(bare_query, n)
    bare.close()
    overhead = {k: round(transport_stats[k] - bare_stats[k], 4) for k in ("median_ms", "p95_ms", "mean_ms")}
    return {"transport": transport_stats, "bare_pyserial": bare_stats, "transport_overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="queries per measurement")
    n = parser.parse_args().n
    results: dict[str, object] = {
        "benchmark": "serial_roundtrip",
        "query": "*IDN?",
        "target": "transport median and p95 under 2 ms per query beyond the device's own time",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pyserial": version("pyserial"),
        },
    }
    with emulator("--pty") as path:
        results["pty"] = measure(path, n)
    with emulator("--tcp", "0") as url:
        results["tcp"] = measure(url, n)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
