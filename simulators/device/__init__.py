"""Solar cells made from the TRMC station's films: a single-diode device model sharing the film model
(`model.DeviceModel`, `settings.DeviceSettings`), a Keithley 2400-class SMU emulator that measures their
J-V curves (`wire`) and an in-process station without a wire (`station`)."""
