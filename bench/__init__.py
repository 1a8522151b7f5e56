"""Benchmarks of issue 7: one command, `python -m bench [--quick] [--only NAME]`, against the
real-server lane's server (our FerretDB binary, or MONGODB_TEST_URL), writing BENCHMARKS.md.

One module per benchmark (`ingest`, `dispatch`, `visibility`, `emitter`, `flood`), each a
`run(harness, document)` that appends its rows and notes; `harness` and `procs` start and stop
the processes; `workload` builds the events; `stats` and `report` are pure.
"""
