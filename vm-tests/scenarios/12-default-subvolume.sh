# shellcheck shell=bash
# 12-default-subvolume: `root` is the filesystem's default subvolume (openSUSE-style; a bootloader without
# rootflags=subvol=) and the kernel command line has no rootflags at all, so the initrd mounts whatever the
# default is. tabula must make each new root the default as it rotates: every boot comes up on a fresh,
# writable `root` (never on last boot's retired, read-only root), and the host sees the default follow it.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "20s"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]
TOML
mount_image "$IMG" rw
btrfs -q subvolume set-default "$MNT/root" || die "set-default"
umount_image

no_subvol="console=ttyS0 panic=-1 loglevel=7 rd.emergency=poweroff root=/dev/vda rootfstype=btrfs rw"
for n in 1 2 3; do
	guest_script "boot$n" <<GUEST
ls / | grep ephemeral- | sed 's/^/seen: /'
step write sh -c 'echo "ephemeral $n" >/ephemeral-boot$n'
echo "kept $n" >/var/lib/keep/boot$n
step mounts cat /proc/self/mounts
GUEST
	must "boot $n: qemu exits by itself" vm_boot "boot$n" --base-append "$no_subvol"
	check "boot $n: the guest reached its script" serial_has "boot$n" '^VMTEST: poweroff'
	check "boot $n: the root is writable" test "$(step_rc "boot$n" write)" = 0
	check "boot $n: no earlier ephemeral file was visible (a fresh root)" serial_lacks "boot$n" '^seen: '
	check "boot $n: / is the subvolume 'root'" bash -c 'grep -E "^/dev/vda / btrfs rw.*subvol=/root( |,|$)" <<<"$1"' _ "$(section "boot$n" mounts)"
	check "boot $n: tabula moved the default subvolume" serial_has "boot$n" "the default subvolume is 'root'"

	mount_image "$IMG"
	check "boot $n: layout whole" layout_whole
	check "boot $n: the default subvolume is root" bash -c '[[ $(btrfs subvolume get-default "$1") == *" path root" ]]' _ "$MNT"
	mapfile -t names < <(old_roots)
	check "boot $n: one retired root per boot (${names[*]})" count_is "$n" "${names[@]}"
	if [[ $n -ge 2 ]]; then
		newest=$(newest_of "${names[@]}")
		check "boot $n: the newest retired root holds boot $((n - 1))'s file" \
			file_has "$MNT/old_roots/$newest/ephemeral-boot$((n - 1))" "ephemeral $((n - 1))"
		check "boot $n: retired roots are read-only" is_ro_subvol "$MNT/old_roots/$newest"
	fi
	for k in $(seq 1 "$n"); do
		check "boot $n: persisted file of boot $k kept" file_has "$MNT/persist/var/lib/keep/boot$k" "kept $k"
	done
	umount_image
done
