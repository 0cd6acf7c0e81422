"""Which simulator models exist (`sim:<model>` in a protocol) and what each accepts and measures."""

from __future__ import annotations

from drivers.base import DriverDescription
from drivers.mbe import MBE_DESCRIPTION
from drivers.trmc import TRMC_DESCRIPTION
from simulators.testfunctions import TEST_FUNCTIONS

_DESCRIPTIONS: dict[str, DriverDescription] = {
    **{name: model.description for name, model in TEST_FUNCTIONS.items()},
    "trmc": TRMC_DESCRIPTION,
    "mbe": MBE_DESCRIPTION,
}

MODELS: tuple[str, ...] = tuple(sorted(_DESCRIPTIONS))


def describe(model: str) -> DriverDescription:
    """The envelope and measured quantities of simulator `model`; KeyError names the known models."""
    try:
        return _DESCRIPTIONS[model]
    except KeyError:
        raise KeyError(f"unknown simulator model {model!r}; known: {', '.join(MODELS)}") from None
