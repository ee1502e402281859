#!/usr/bin/env bash
# Every check and test of Argent cluster, as CI runs them. Installs nats-server when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# A CI build is built once and thrown away: incremental caches would only double its disk use.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

NATS_SERVER_BIN=$(scripts/install-nats.sh)
export NATS_SERVER_BIN
echo "using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN"
# The dashboard test drives the published Control UI in Chromium (tests/tests/it/dashboard.rs).
ARGENT_E2E_DIR=$(scripts/install-e2e.sh)
if [ -n "$ARGENT_E2E_DIR" ]; then
    export ARGENT_E2E_DIR
    echo "dashboard test: Chromium, playwright-core and the Control UI in $ARGENT_E2E_DIR"
else
    unset ARGENT_E2E_DIR
    echo "dashboard test: skipped (see the message above)"
fi

# The offline voice (tests/tests/it/voice.rs) is espeak-ng.
command -v espeak-ng > /dev/null || scripts/apt-install.sh espeak-ng
if command -v espeak-ng > /dev/null; then
    echo "voice test: $(espeak-ng --version)"
    # Installed: its test must run, not skip.
    export ARGENT_EXPECT_ESPEAK=1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The gateway without its embedded node-agent is a pure edge (ADR 12): it must build so.
cargo check -p argent-gateway --no-default-features --locked
# Builds every binary the cluster tests start as processes, then runs all tests.
cargo build --workspace --all-targets --locked
# The store benchmark needs no cluster: a one-second smoke run keeps the scenario working.
target/debug/argent-bench store --quick > /dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one summary per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
# Fuzzing (fuzz/README.md): every cargo-fuzz target for a few seconds from its seed corpus,
# one JSON line each; a crash fails the run. Built without AddressSanitizer here (see
# scripts/fuzz.sh); FUZZ_SECONDS runs each target longer.
FUZZ_SANITIZER=none scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
