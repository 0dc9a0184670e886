#!/usr/bin/env bash
# Does `tabula rollback` cost the same with 100 retired roots as with 1? (issue 2: O(1) in old roots)
# Measures the median wall time of RUNS rollbacks at 1 retired root (the baseline) and at 100, on the
# same loop-mounted btrfs image in the same run, and prints the ratio. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-15}
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 2; }
command -v mkfs.btrfs >/dev/null || { apt-get update -qq && apt-get install -y -qq btrfs-progs >/dev/null; }
cargo build --quiet --release
tabula=$PWD/target/release/tabula
work=$(mktemp -d /tmp/tabula-bench.XXXXXX)
dev=""
trap '[ -n "$dev" ] && losetup -d "$dev" 2>/dev/null; rm -rf "$work"' EXIT
truncate -s 2G "$work/img" && mkfs.btrfs -q "$work/img" && dev=$(losetup --find --show "$work/img")
printf '[layout]\ndevice = "%s"\n' "$dev" > "$work/t.toml"
export TABULA_CONFIG=$work/t.toml

unshare -m --propagation private bash -euo pipefail -s "$tabula" "$dev" "$work" "$RUNS" <<'BENCH'
tabula=$1 dev=$2 work=$3 runs=$4
mnt=$work/mnt; mkdir -p "$mnt"; mount "$dev" "$mnt"
btrfs -q subvolume create "$mnt/root"; mkdir -p "$mnt/root/etc"
"$tabula" --log stderr init --blank-from current >/dev/null
# One timed rollback: write to the root first so there is something to retire.
one() {
  echo x > "$mnt/root/f"; sync
  local t0 t1; t0=$(date +%s%N); "$tabula" --log stderr rollback >/dev/null 2>&1; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
one >/dev/null   # retired roots: 1
base=$(for i in $(seq "$runs"); do one; done | median)
n=$(ls "$mnt/old_roots" | grep -c json)
while [ "$(ls "$mnt/old_roots" | grep -c json)" -lt 100 ]; do one >/dev/null; done
at100=$(for i in $(seq "$runs"); do one; done | median)
m=$(ls "$mnt/old_roots" | grep -c json)
umount "$mnt"
echo "rollback median over $runs runs: ${base} us with ${n}-$((n + runs)) retired roots (baseline), ${at100} us with ${m} retired roots"
awk -v a="$at100" -v b="$base" 'BEGIN { printf "ratio (100+ roots / baseline): %.2f\n", a / b }'
BENCH
