"""Composes everything: protocol files, the campaign file, the engine, dry runs, offline replays,
reports and the command line, each a sub-package (see docs/architecture.md). `Campaign`
(`controller.campaign`) is the Python API."""
