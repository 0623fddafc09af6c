#!/usr/bin/env bash
# kubectl 1.20 for tests/e2e/test_kubectl_120.py: Debian bookworm's kubernetes-client
# (1.20.5+really1.20.2), unpacked into .cache/kubectl-1.20/ in the work tree.
#
# It is not installed with dpkg: the package's /usr/bin/kubectl clashes with the machine's own
# kubectl. Instead `apt-get download` fetches the .deb (checked against the signed package lists)
# and `dpkg-deb -x` unpacks it; the tests run .cache/kubectl-1.20/usr/bin/kubectl.
#
# Idempotent (does nothing once the binary is there and runs) and quiet (prints only on failure).
# Runs `apt-get update` once, only if the first download fails (a fresh machine has no lists).
# Exit status: 0 when the binary is ready, 1 when it could not be obtained (the tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CACHE="$ROOT/.cache/kubectl-1.20"
BIN="$CACHE/usr/bin/kubectl"
PACKAGE=kubernetes-client

runs() { [ -x "$BIN" ] && "$BIN" version --client --short >/dev/null 2>&1; }
runs && exit 0

fail() {
  echo "install_kubectl_120: $*; the kubectl 1.20 tests will skip" >&2
  exit 1
}
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || fail "apt-get or dpkg-deb not found"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

mkdir -p "$ROOT/.cache"
work=$(mktemp -d "$ROOT/.cache/kubectl-1.20.XXXXXX")
trap 'rm -rf "$work"' EXIT

# As root apt drops privileges to _apt for downloads, which cannot write to our private temp dir:
# download as root instead (what apt falls back to anyway, with a warning).
download() {
  (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$PACKAGE" >"$work/apt.log" 2>&1)
}
if ! download; then
  $SUDO apt-get update -qq >"$work/update.log" 2>&1 || true
  download || fail "apt-get download $PACKAGE failed: $(tail -n 3 "$work/apt.log")"
fi

deb=$(find "$work" -maxdepth 1 -name "${PACKAGE}_*.deb" -print -quit)
[ -n "$deb" ] || fail "apt-get download $PACKAGE left no .deb"
dpkg-deb -x "$deb" "$work/root" || fail "dpkg-deb -x $deb failed"

# Swap the unpacked tree in whole, so an interrupted run never leaves half a tree behind.
rm -rf "$CACHE"
mv "$work/root" "$CACHE"
runs || fail "$BIN does not run"
