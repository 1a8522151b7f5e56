#!/usr/bin/env bash
# Everything the integration lane and the bench need besides pip: the FerretDB test server
# (built from the Go module proxy) and PostgreSQL behind it (Debian's `postgresql` package,
# installed when missing; skipped with FERRETDB_BACKEND=sqlite or MONGODB_TEST_URL).
# Idempotent: a second run does nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/ferretdb/build.sh"

if [ -n "${MONGODB_TEST_URL:-}" ] || [ "${FERRETDB_BACKEND:-postgresql}" = "sqlite" ]; then
  exit 0
fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup.sh: PostgreSQL (initdb, pg_ctl) is not installed and this is not Debian: install it, or set FERRETDB_BACKEND=sqlite" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup.sh: installing Debian's postgresql package for the test server" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
