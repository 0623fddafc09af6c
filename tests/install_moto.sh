#!/usr/bin/env bash
# moto's S3 server for tests/integration/test_snapshots_s3.py, in a virtual environment of its own
# under .cache/moto/ in the work tree.
#
# Not in the test extra: every botocore pins python-dateutil<3 while the kubernetes client needs
# >=3, so one environment cannot hold both. The tests run .cache/moto/bin/moto_server as a separate
# process on 127.0.0.1 and talk S3 to it over HTTP, so it needs nothing from the project's environment.
#
# Idempotent (does nothing once the server's binary is there) and quiet (prints only on failure).
# Exit status: 0 when the binary is ready, 1 when it could not be installed (the tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="$(pwd)/.cache/moto"
BIN="$VENV/bin/moto_server"
[ -x "$BIN" ] && exit 0

fail() {
  echo "install_moto: $*; the S3 snapshot tests will skip" >&2
  exit 1
}
python3 -m venv "$VENV" >/dev/null 2>&1 || fail "python3 -m venv failed"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "moto[server]>=5,<6" >/dev/null 2>&1 \
  || fail "pip install moto[server] failed"
[ -x "$BIN" ] || fail "moto_server is missing after the install"
