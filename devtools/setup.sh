#!/usr/bin/env bash
# Everything the tests and the bench need besides pip: the FerretDB test server (built from the
# Go module proxy), and, in one apt-get step when missing, the Debian packages they use:
# `postgresql` behind FerretDB (not needed with FERRETDB_BACKEND=sqlite or MONGODB_TEST_URL) and
# `chromium` for the web console's browser tests (Playwright launches it by path).
# Idempotent: a second run installs nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/ferretdb/build.sh"

missing=()
if [ -z "${MONGODB_TEST_URL:-}" ] && [ "${FERRETDB_BACKEND:-postgresql}" != "sqlite" ] \
   && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  missing+=(chromium)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup.sh: ${missing[*]} not installed and this is not Debian: install them (or set FERRETDB_BACKEND=sqlite," \
       "and CHROMIUM to a Chromium binary)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup.sh: installing Debian's ${missing[*]} for the tests" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
