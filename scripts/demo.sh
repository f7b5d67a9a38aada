#!/usr/bin/env bash
# README's first command: the main job end to end (a 4-node consortium on
# loopback, a governed fine-tune, traces verified as a light client, the
# HTML report). Installs what the build needs first. Extra arguments go to
# `govtune demo` (default: --dir govtune-demo; --short is the CI profile).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
need_toolchain
need_apt libclang-dev -   # rocksdb's bindgen
need_apt g++ g++          # rocksdb's C++
apt_install
[ $# -eq 0 ] && set -- --dir govtune-demo
exec cargo run -p govtune -- demo "$@"
