"""Composes everything: protocol files, the campaign engine, the SQLite store, the safety gate, the CLI."""
