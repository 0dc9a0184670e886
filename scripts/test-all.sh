#!/usr/bin/env bash
# Every test: formatting, lints, unit/property/golden tests, integration tests on real loop-mounted
# btrfs, the static release build, the initrd integration checks (shellcheck, NixOS module evaluation)
# and the qemu boot scenarios. Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-all: run as root (loop devices, mounts, qemu)" >&2; exit 2; }
. scripts/packages.sh
tabula_install_packages
t0=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --features fault-injection -- -D warnings
step "cargo doc"
RUSTDOCFLAGS='-D warnings' cargo doc --no-deps --quiet
step "cargo build with the rustc of the current stable NixOS (26.05: rustc 1.95.0)"
# The NixOS package (initrd/nixos/flake.lock pins nixos-26.05) builds with that release's rustc: this
# fails if the code or Cargo.toml's rust-version needs a newer one. Installed only when missing.
if rustup run 1.95.0 rustc --version >/dev/null 2>&1; then nixos_rustc=(+1.95.0)
elif [[ $(rustc --version) == "rustc 1.95.0 "* ]]; then nixos_rustc=()
else rustup toolchain install 1.95.0 --profile minimal && nixos_rustc=(+1.95.0); fi
cargo "${nixos_rustc[@]}" build --locked --quiet
step "cargo test: unit, property, golden, and root integration tests on loop btrfs"
# --include-ignored runs the root-needing integration tests (marked #[ignore = "needs root: …"]), and
# CI=true fails the run if they were not asked for; the private mount namespace keeps every mount of the
# run away from the host even if a test's own guard failed.
CI=${CI:-true} unshare -m --propagation private cargo test --features fault-injection -- --include-ignored
step "static release binary"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu
bin=target/x86_64-unknown-linux-gnu/release/tabula
# Static: no program interpreter, no shared libraries, and it runs in an empty chroot (as in an initrd).
if readelf -l "$bin" | grep -q INTERP || readelf -d "$bin" | grep -q NEEDED; then
  echo "test-all: $bin is dynamically linked" >&2; exit 1
fi
empty=$(mktemp -d) && cp "$bin" "$empty/tabula"
chroot "$empty" /tabula --version
rm -rf "$empty"
echo "static: $bin ($(stat -c %s "$bin") bytes)"
if "$bin" rollback --list-fault-points >/dev/null 2>&1; then echo "test-all: the release build has fault points" >&2; exit 1; fi
step "initrd integration: shellcheck, NixOS module parse and evaluation"
initrd/check
step "vm-tests: qemu boots through tabula's initrd files"
TABULA_BIN=$PWD/$bin vm-tests/run
step "test-all: all passed"
