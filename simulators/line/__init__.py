"""An OPV line in simulation: a coating robot, hot plates and the TRMC station, each behind its own wire,
sharing one record of the films they make (`ledger.FilmLedger`)."""
