#!/usr/bin/env bash
# A quick demo without a VM: a btrfs image, `tabula init`, three simulated boots with writes in between,
# then the retired roots and what each one holds. Run as root on Debian 12; installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "demo: run as root (it creates a loop device and mounts it)" >&2; exit 2; fi
if ! command -v mkfs.btrfs >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends btrfs-progs >/dev/null
fi

echo "== building the static tabula binary"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu
TABULA=$PWD/target/x86_64-unknown-linux-gnu/release/tabula

work=$(mktemp -d /tmp/tabula-demo.XXXXXX)
dev=""
cleanup() {
  [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 1G "$work/disk.img"
mkfs.btrfs -q -L tabula-demo "$work/disk.img"
dev=$(losetup --find --show "$work/disk.img")
cat > "$work/tabula.toml" <<TOML
[layout]
device = "LABEL=tabula-demo"   # found by reading btrfs superblocks, no udev needed
TOML
export TABULA_CONFIG=$work/tabula.toml

# Everything that mounts runs in a private mount namespace: nothing leaks, nothing to clean up.
unshare -m --propagation private bash -euo pipefail -s "$TABULA" "$dev" "$work" <<'DEMO'
tabula=$1 dev=$2 work=$3
mnt=$work/mnt; mkdir -p "$mnt"
step() { printf '\n== %s\n' "$*"; }

step "installing a tiny 'OS' into the root subvolume"
mount "$dev" "$mnt" && btrfs -q subvolume create "$mnt/root"
mkdir -p "$mnt/root/etc" "$mnt/root/var/log"
echo "tabula-demo" > "$mnt/root/etc/hostname"
echo "ID=demo" > "$mnt/root/etc/os-release"
umount "$mnt"

step "tabula init --blank-from current"
"$tabula" init --blank-from current

for boot in 1 2 3; do
  step "boot $boot: the system runs and writes to its root"
  mount -o subvol=root "$dev" "$mnt"
  echo "junk from boot $boot" > "$mnt/var/log/boot-$boot.log"
  echo "edited in boot $boot" >> "$mnt/etc/hostname"
  [ "$boot" = 2 ] && rm "$mnt/etc/os-release"
  find "$mnt" -mindepth 1 | sed "s|^$mnt||" | sort | sed 's/^/  live root: /'
  umount "$mnt"
  step "reboot: tabula rollback (as the initrd would run it)"
  "$tabula" rollback
done

step "tabula roots list"
"$tabula" roots list --json | grep -E '"(ref|name|retired_at|pinned)"' | paste - - - - | sed 's/^ */  /'
step "tabula roots show -1"
"$tabula" roots show -1 | sed 's/^/  /'
step "the layout now"
mount "$dev" "$mnt"
btrfs subvolume list -o "$mnt/old_roots" | sed 's/^/  /'
for meta in "$mnt"/old_roots/*.json; do
  name=$(basename "$meta" .json)
  step "retired root $name"
  grep -E '"(seq|retired_at|clock_trusted|uuid|boot_id)"' "$meta" | sed 's/^ */  /'
  echo "  read-only: $(btrfs property get -ts "$mnt/old_roots/$name" ro)"
  find "$mnt/old_roots/$name" -type f | sed "s|^$mnt/old_roots/$name||" | sort | sed 's/^/  holds: /'
done
step "the live root is the blank again"
find "$mnt/root" -mindepth 1 | sed "s|^$mnt/root||" | sort | sed 's/^/  /'
umount "$mnt"
DEMO
echo
echo "demo: done"
