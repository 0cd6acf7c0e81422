"""The one place CLI commands turn the errors users cause into a line and a code."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import click

from closedloop.controller.campaign import BadInput, CampaignOver
from closedloop.controller.cli.exit_codes import EXIT_BAD_INPUT, EXIT_FAILED
from closedloop.controller.engine.stations import InstrumentUnavailable
from closedloop.controller.protocol.model import ProtocolError
from closedloop.controller.store.errors import StorageFailed, StoreError
from closedloop.drivers.base import EnvelopeViolation


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map the errors users cause to a one-line message and a stable exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProtocolError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            sys.exit(EXIT_BAD_INPUT)
        except (StorageFailed, CampaignOver) as exc:  # a failing disk; an `ask` after a stop rule fired
            fail(str(exc), EXIT_FAILED)
        except (BadInput, StoreError, InstrumentUnavailable, EnvelopeViolation, FileNotFoundError) as exc:
            fail(str(exc), EXIT_BAD_INPUT)

    return wrapper


def configure_runtime() -> None:
    """Process-wide settings for commands that plan: one torch thread (GP fits here are small, and extra
    threads spin and slow everything on a shared 2-core lab PC; override with CLOSEDLOOP_TORCH_THREADS),
    and BoTorch's optimizer retries/jitter warnings kept out of the operator's terminal (the planner
    records fallbacks in each proposal's provenance)."""
    import torch

    torch.set_num_threads(int(os.environ.get("CLOSEDLOOP_TORCH_THREADS", "1")))
    warnings.filterwarnings("ignore", module=r"(botorch|gpytorch|linear_operator)(\.|$)")
