#!/usr/bin/env bash
# Every test: formatting, lints, unit and integration tests on real loop-mounted btrfs (needs root),
# and the static release build. Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "test-all: run as root (integration tests create loop devices)" >&2; exit 2; fi
need=()
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
command -v losetup >/dev/null || need+=(util-linux)
command -v unshare >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --features fault-injection -- -D warnings
echo "== cargo test (unit, property, golden, and root integration tests on loop btrfs)"
# CI=true makes root-needing tests fail instead of skipping; a private mount namespace keeps every mount
# of the run away from the host even if a test's own guard were to fail.
CI=${CI:-true} unshare -m --propagation private cargo test --features fault-injection
echo "== static release binary"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu
bin=target/x86_64-unknown-linux-gnu/release/tabula
if ldd "$bin" >/dev/null 2>&1; then echo "test-all: $bin is dynamically linked" >&2; exit 1; fi
echo "static: $bin ($(stat -c %s "$bin") bytes)"
if "$bin" rollback --list-fault-points >/dev/null 2>&1; then echo "test-all: release build has fault points" >&2; exit 1; fi
echo "test-all: all passed"
