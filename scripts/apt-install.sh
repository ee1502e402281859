#!/usr/bin/env bash
# Installs Debian packages a test needs: `scripts/apt-install.sh PACKAGE…`. Without root it
# says what is missing and exits 0: the tests that need the packages skip, saying why.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "apt-install: $* missing and not root: the tests that need it will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y "$@" >&2 || { apt-get update >&2 && apt-get install -y "$@" >&2; }
