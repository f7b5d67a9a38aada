#!/usr/bin/env bash
# README's second command: the whole test suite. Installs what it needs
# first (chromium renders the demo's report in one test; iproute2 makes
# the multi-host tests' network namespaces). Extra arguments
# go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_toolchain
need_apt libclang-dev -
need_apt g++ g++
need_apt iproute2 ip
need_apt chromium chromium
apt_install
need_nextest
exec cargo nextest run --workspace "$@"
