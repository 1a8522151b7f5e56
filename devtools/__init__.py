"""Developer tools: the FerretDB test server (`devtools/ferretdb`) and the process helpers the
test suite and the benchmarks share (`devtools.procs`). Not installed with the package."""
