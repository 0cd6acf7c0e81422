"""Physics models, test functions and real-data lookup pools that stand in for instruments."""
