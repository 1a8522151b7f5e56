#!/usr/bin/env bash
# Builds devtools/ferretdb/bin/ferretdb-test (FerretDB v1.24.2 with its PostgreSQL and SQLite backends, pure Go) from
# the Go module proxy. Idempotent: does nothing when the binary is newer than its sources.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/bin/ferretdb-test"
if [ -x "$bin" ] && [ "$bin" -nt "$here/main.go" ] && [ "$bin" -nt "$here/go.sum" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "build.sh: Go is not installed (need Go >= 1.22)" >&2; exit 1; }
cd "$here"
CGO_ENABLED=0 go build -trimpath -o "$bin" .
echo "built $bin" >&2
