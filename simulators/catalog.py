"""Which simulator models exist and what each accepts and measures.

Most are whole instruments in process (`sim:<model>` in a protocol, or `sim://<model>` behind their
driver). The furnace is different: it speaks SCPI, so it is reached through the serial driver, either in
process (`driver: serial` with `connection: sim://furnace`) or behind `closedloop emulate furnace`.
"""

from __future__ import annotations

from closedloop.drivers.base import DriverDescription, Limit, SafetyEnvelope
from closedloop.drivers.mbe import MBE_DESCRIPTION
from closedloop.drivers.trmc import TRMC_DESCRIPTION
from closedloop.simulators import emulator, furnace
from closedloop.simulators.testfunctions import TEST_FUNCTIONS

# What the furnace itself takes (its SOUR:* ranges) and what it reports, under the names its example
# protocol gives them (protocols/serial_furnace.yaml).
FURNACE_DESCRIPTION = DriverDescription(
    name="furnace",
    envelope=SafetyEnvelope({
        "anneal_temp": Limit(min=-50.0, max=furnace.MAX_TEMP_C, unit="degC"),
        "anneal_time": Limit(min=0.0, max=furnace.MAX_DWELL_S / 60.0, unit="min"),
        "gas_flow": Limit(min=0.0, max=furnace.MAX_FLOW_SCCM, unit="sccm"),
    }),
    measures={"sheet_resistance": "ohm", "furnace_temp": "degC"},
)

_DESCRIPTIONS: dict[str, DriverDescription] = {
    **{name: model.description for name, model in TEST_FUNCTIONS.items()},
    "trmc": TRMC_DESCRIPTION,
    "mbe": MBE_DESCRIPTION,
    "furnace": FURNACE_DESCRIPTION,
}

MODELS: tuple[str, ...] = tuple(sorted(_DESCRIPTIONS))
# Models that speak a wire protocol: the serial driver talks to them, they are not drivers themselves.
# TRMC and MBE also have wire models, but their own drivers speak them (and `sim:trmc`/`sim:mbe` stay).
SERIAL_MODELS: tuple[str, ...] = tuple(sorted(m for m in emulator.MODELS if m not in ("trmc", "mbe")))


def describe(model: str) -> DriverDescription:
    """The envelope and measured quantities of simulator `model`; KeyError names the known models."""
    try:
        return _DESCRIPTIONS[model]
    except KeyError:
        raise KeyError(f"unknown simulator model {model!r}; known: {', '.join(MODELS)}") from None
