"""Solar cells made from the TRMC station's films: a single-diode device model sharing the film model,
and a Keithley 2400-class SMU emulator that measures their J-V curves."""

from closedloop.simulators.device.model import DeviceModel, DeviceSettings

__all__ = ["DeviceModel", "DeviceSettings"]
