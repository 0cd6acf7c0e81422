"""Physics models, test functions and real-data lookup pools that stand in for instruments: wire
emulators behind a port (`sim://NAME`, `closedloop emulate NAME`) and whole instruments in process
(`driver: sim:NAME`), each registered in `simulators.registry`.

May use the drivers' records and transport; never planners or the controller."""
