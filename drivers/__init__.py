"""Talking to instruments: transports, wire protocols, drivers, and the analysis of raw data."""
