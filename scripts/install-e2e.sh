#!/usr/bin/env bash
# What the dashboard test (tests/tests/it/dashboard.rs) needs, installed when missing:
# Debian's Chromium, Node, playwright-core, and the published Control UI — the
# dist/control-ui folder of the openclaw npm package, unpacked from `npm pack` (the package
# alone, none of its dependencies). Prints the directory that holds node_modules/ and
# control-ui/, or nothing (with the reason on stderr) when it cannot install them: not
# root and Chromium or Node missing. CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENCLAW=openclaw@2026.9.6
PLAYWRIGHT=playwright-core@1.63.0
dir=${ARGENT_E2E_DIR:-$PWD/target/e2e}

command -v chromium > /dev/null || scripts/apt-install.sh chromium
command -v node > /dev/null || scripts/apt-install.sh nodejs npm
if ! command -v chromium > /dev/null || ! command -v node > /dev/null; then
    echo "install-e2e: Chromium or Node missing: the dashboard test will be skipped" >&2
    exit 0
fi

mkdir -p "$dir"
# A marker written after each step completes: an interrupted install is done again.
if [ ! -f "$dir/.playwright-installed" ]; then
    npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "$PLAYWRIGHT" >&2
    touch "$dir/.playwright-installed"
fi
if [ ! -f "$dir/control-ui/index.html" ]; then
    tarball=$(cd "$dir" && npm pack --silent "$OPENCLAW" | tail -n 1)
    rm -rf "$dir/unpacked" && mkdir -p "$dir/unpacked"
    tar -xzf "$dir/$tarball" -C "$dir/unpacked" package/dist/control-ui
    rm -rf "$dir/control-ui" && mv "$dir/unpacked/package/dist/control-ui" "$dir/control-ui"
    rm -rf "$dir/unpacked" "$dir/$tarball"
fi
echo "$dir"
