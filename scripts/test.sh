#!/usr/bin/env bash
# README's second command: the whole test suite. Installs what it needs
# first (chromium renders the demo's report in one test; iproute2 makes
# the multi-host tests' network namespaces; python3-cryptography runs the
# witness test's independent note checker). Extra arguments
# go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_toolchain
need_apt libclang-dev -
need_apt g++ g++
need_apt iproute2 ip
need_python cryptography.hazmat.primitives.asymmetric.ed25519 python3-cryptography
need_apt chromium chromium
apt_install
need_nextest
exec cargo nextest run --workspace "$@"
