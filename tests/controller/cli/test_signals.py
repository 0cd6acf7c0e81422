"""Signal handling of long-running commands: Ctrl-C and SIGTERM pause a campaign, even in a process that
started with SIGINT ignored, and the host's handlers come back afterwards (in-process use, tests)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from closedloop.controller.cli.main import main
from closedloop.controller.cli.signals import handled_signals, pause_on_signals


@pytest.fixture
def host_handlers() -> Iterator[dict[int, object]]:
    """The test process's own handlers, put back whatever a test does."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield saved
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_interrupts_a_block_even_if_the_process_ignored_sigint(
    sig: signal.Signals, host_handlers: dict[int, object]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a non-interactive shell starts
    with pytest.raises(KeyboardInterrupt), pause_on_signals():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # a real signal ends the sleep at once; the handler raises
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # restored, not left as ours
    assert signal.getsignal(signal.SIGTERM) == host_handlers[signal.SIGTERM]


def test_handlers_come_back_even_when_the_block_fails(host_handlers: dict[int, object]) -> None:
    seen: list[int] = []
    with pytest.raises(RuntimeError), handled_signals(lambda signum, frame: seen.append(signum)):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        raise RuntimeError("the block failed")
    assert seen == [signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in host_handlers} == host_handlers


def test_closedloop_run_in_process_leaves_the_host_signal_handlers_as_they_were(
    tmp_path: Path, branin_protocol: Callable[..., Path], host_handlers: dict[int, object]
) -> None:
    protocol = branin_protocol(trials=3, n_init=3)
    result = CliRunner().invoke(main, ["run", str(protocol), "--sim", "--quiet", "--no-report",
                                       "--db", str(tmp_path / "b.sqlite")])
    assert result.exit_code == 0, result.output
    assert "stopped: budget" in result.output
    assert {s: signal.getsignal(s) for s in host_handlers} == host_handlers
