#!/usr/bin/env bash
# The main job, as a demo: boot a fresh btrfs image three times through tabula's own initrd (a real
# Debian kernel under qemu) and show, boot by boot, what was erased, what was kept and what
# `tabula roots list` says, then what `tabula advise` would add to the allowlist. Run as root on Debian
# 12; installs what it needs. About two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (loop devices, mounts, qemu)" >&2; exit 2; }
. scripts/packages.sh
tabula_install_packages
exec vm-tests/demo
