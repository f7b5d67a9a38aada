# Installs what a fresh Debian machine with only a Rust toolchain lacks to
# build and test govtune. Sourced by scripts/demo.sh, scripts/test.sh and
# .ci/run; each names what it needs:
#   need_toolchain                 cargo and rustc >= the workspace's rust-version
#   need_apt PACKAGE COMMAND_OR_-  Debian packages (installed together by apt_install)
#   need_python MODULE PACKAGE     python3 able to import MODULE (Debian's PACKAGE)
#   need_nextest                   cargo-nextest from crates.io (--locked)
# Without root, it prints the exact command to run and exits 2.

min_rust="1.87"
apt_missing=()

say() { echo "[setup] $*" >&2; }

need_toolchain() {
  if ! command -v cargo >/dev/null 2>&1; then
    say "no Rust toolchain: install rustup (Debian's packaged rustc is too old), then"
    say "  rustup default stable"
    exit 2
  fi
  local have
  have=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$min_rust" "$have" | sort -V | head -1)" != "$min_rust" ]; then
    say "rustc $have is older than $min_rust (the workspace's rust-version): rustup update stable"
    exit 2
  fi
}

# need_apt PACKAGE CHECK: CHECK is a command that proves the package is
# there, or '-' to ask dpkg.
need_apt() {
  local pkg=$1 check=$2
  if [ "$check" = "-" ]; then
    dpkg -s "$pkg" >/dev/null 2>&1 && return 0
  else
    command -v "$check" >/dev/null 2>&1 && return 0
  fi
  apt_missing+=("$pkg")
}

# need_python MODULE PACKAGE: python3 with MODULE (the witness test checks
# checkpoint notes with a Python checker that is not govtune's).
need_python() {
  python3 -c "import $1" >/dev/null 2>&1 && return 0
  command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
  apt_missing+=("$2")
}

apt_install() {
  [ ${#apt_missing[@]} -eq 0 ] && return 0
  local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${apt_missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${apt_missing[*]}. Run as root, then again:"
    say "  sudo sh -c '$cmd'"
    exit 2
  fi
  say "installing Debian packages: ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
  apt_missing=()
}

need_nextest() {
  command -v cargo-nextest >/dev/null 2>&1 && return 0
  say "installing cargo-nextest from crates.io"
  # A test runner spends its time waiting for tests: the debug build runs
  # them as well and compiles in a fraction of a release build's time.
  # Its own build directory: the workspace's may be locked by a build
  # running beside it (.ci/run).
  env -u CARGO_TARGET_DIR cargo install cargo-nextest --locked --debug
}
