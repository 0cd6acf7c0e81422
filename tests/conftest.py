"""Shared fixtures: small protocol files written to real temporary directories."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> Iterator[None]:
    """Small GPs gain nothing from intra-op threads, and when other processes load the cores,
    torch's spinning OpenMP workers make every tiny op wait (20x slower fits were measured).
    The CLI does the same for campaigns (controller.cli.campaign.configure_runtime)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

BRANIN = """\
name: branin-test
description: Branin as a simulated instrument, for engine tests
space:
  x1: {{type: float, low: -5, high: 10}}
  x2: {{type: float, low: 0, high: 15}}
objectives:
  y: {{direction: minimize{target}}}
instrument:
  driver: sim:branin
  connection: sim://branin
  options: {{{options}}}
planner: {{initial: {{method: sobol, n: {n_init}}}, batch_size: {batch}, seed: 3{acq}}}
budget: {{trials: {trials}{wall}}}
stop: {{{stop}}}
approval: {approval}
failures: {{instrument_fault_retries: {retries}, on_fault: {on_fault}}}
"""


@pytest.fixture
def branin_protocol(tmp_path: Path) -> Callable[..., Path]:
    """Write a Branin protocol with the given knobs and return its path."""

    def write(
        *,
        trials: int = 8,
        n_init: int = 4,
        batch: int = 1,
        options: str = "noise_sd: 0.01",
        stop: str = "",
        target: float | None = None,
        wall: str | None = None,
        approval: str = "none",
        retries: int = 1,
        on_fault: str = "continue",
        random: bool = False,
        name: str = "branin.yaml",
    ) -> Path:
        text = BRANIN.format(
            options=options,
            n_init=n_init,
            batch=batch,
            trials=trials,
            stop=stop,
            target="" if target is None else f", target: {target}",
            wall="" if wall is None else f", wall_time: {wall}",
            approval=approval,
            retries=retries,
            on_fault=on_fault,
            acq=", acquisition: random" if random else "",
        )
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
