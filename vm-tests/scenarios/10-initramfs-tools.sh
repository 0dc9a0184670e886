# shellcheck shell=bash
# heavy
# 10-initramfs-tools: a debootstrapped Debian 12 with initramfs-tools gets tabula by
# `make install install-initramfs-tools`; mkinitramfs builds a real image in the chroot; lsinitramfs
# shows the binary, its config and both scripts in place (and local-premount ordered after
# btrfs). Then that image boots a busybox root twice: rollback in local-premount, persistence in
# local-bottom with ${rootmnt}.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]
TOML
patch_config "$conf"
rootfs=$(debian_rootfs initramfs-tools) || exit 1
ch=$WORK/chroot
vlog "copying the initramfs-tools root"
cp -a "$rootfs" "$ch" || die "copying the chroot"
install_tabula_into "$ch" "$conf" initramfs-tools
in_chroot "$ch" mkinitramfs -o /tmp/initrd.img "$KVER" >"$WORK/mkinitramfs.log" 2>&1
must "mkinitramfs builds an image with the tabula hook" test -s "$ch/tmp/initrd.img"
in_chroot "$ch" lsinitramfs /tmp/initrd.img >"$WORK/lsinitramfs.txt" 2>&1
for f in usr/bin/tabula etc/tabula/tabula.toml \
	scripts/local-premount/tabula scripts/local-bottom/tabula; do
	check "lsinitramfs: the image holds $f" grep -qx "$f" "$WORK/lsinitramfs.txt"
done
check "lsinitramfs: the image holds the btrfs module" grep -q 'kernel/fs/btrfs/btrfs.ko' "$WORK/lsinitramfs.txt"
mkdir -p "$WORK/unpacked"
in_chroot "$ch" sh -c 'mkdir -p /tmp/u && unmkinitramfs /tmp/initrd.img /tmp/u' >/dev/null 2>&1
order=$(find "$ch/tmp/u" -path '*scripts/local-premount/ORDER' | head -1)
check "local-premount/ORDER runs tabula after btrfs" bash -c 'awk "/btrfs/ { b = NR } /tabula/ { t = NR } END { exit !(b && t && b < t) }" "$1"' _ "${order:-/nonexistent}"
cp "$ch/tmp/initrd.img" "$WORK/initrd-itools.img"
rm -rf "$ch"

# Boot it against a busybox root with the layout.
IMG=$WORK/disk.img
make_image "$IMG" "$conf"
for n in 1 2; do
	guest_script "boot$n" <<GUEST
echo "boot $n" >/marker
echo "boot $n" >/var/lib/keep/$n
step keep grep -c " /var/lib/keep " /proc/self/mounts
GUEST
	must "boot $n: qemu exits by itself" vm_boot "boot$n" --initrd "$WORK/initrd-itools.img" --img "$IMG" \
		--base-append "console=ttyS0 panic=-1 loglevel=6 root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw panic=-1"
	check "boot $n: the root's init ran" serial_has "boot$n" '^VMTEST: poweroff'
	check "boot $n: /var/lib/keep is mounted (local-bottom persist)" test "$(section "boot$n" keep)" = 1
	mount_image "$IMG"
	mapfile -t names < <(old_roots)
	check "boot $n: $n retired roots" count_is "$n" "${names[@]}"
	[[ $n == 2 ]] && check "boot 2: boot 1's root was retired" file_has "$MNT/old_roots/$(newest_of "${names[@]}")/marker" "boot 1"
	check "boot $n: persisted files kept" test -f "$MNT/persist/var/lib/keep/1"
	check "boot $n: layout whole" layout_whole
	umount_image
done
