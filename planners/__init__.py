"""Pure decision logic: a search space and observations in, proposals out. No I/O, no drivers."""
