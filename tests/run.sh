#!/usr/bin/env bash
# Install everything the tests need, then run every check and every test.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# Debian's etcd: etcdctl for end-to-end tests and a real etcd to compare against.
if ! command -v etcdctl >/dev/null || ! command -v etcd >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
  # The package enables a system etcd on 2379; the tests start their own on free ports.
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || $SUDO pkill -x etcd || true
fi

# kubectl 1.20 (Debian's kubernetes-client), unpacked into .cache: its /usr/bin/kubectl would clash.
bash tests/install_kubectl_120.sh

# moto's S3 server for the --etcd-s3 snapshot tests, in .cache/moto (its own environment).
bash tests/install_moto.sh

python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v -E "^(WARNING|DEPRECATION)" || true

echo "== ruff"
ruff check services supervisor tests bench
echo "== import-linter"
lint-imports
echo "== pytest"
# The tests start hundreds of Python processes (servers, agents, CLIs): let them share compiled
# bytecode instead of each compiling the project's modules again (some images set this variable).
unset PYTHONDONTWRITEBYTECODE
exec python3 -m pytest "$@"
