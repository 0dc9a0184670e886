# shellcheck shell=bash
# heavy
# 11-raid1: the root filesystem is one btrfs RAID1 (data, metadata and system chunks mirrored) over two
# virtio disks, named `LABEL=vmraid` in the config and on the kernel command line. Three boots through
# the busybox initrd (no udev: tabula must register both members with the kernel before mounting), then
# three through dracut's systemd initrd (udev). After each boot: the guest saw both members and no
# earlier ephemeral file, one more retired root holding the previous boot's ephemeral file, persisted
# files accumulate, and the filesystem still has both devices, none missing, nothing degraded.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "LABEL=vmraid"
device_timeout = "60s"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]

[retention]
keep_last = 10
TOML
patch_config "$conf"

# The two members, attached on the host only while the images are built or checked (never while qemu
# has them open). Detached on any exit, after unregistering them from the kernel.
LOOPS=()
raid_attach() { # raid_attach IMG1 IMG2
	local i l
	LOOPS=()
	for i in "$1" "$2"; do
		l=$(losetup --find --show "$i") || die "losetup '$i'"
		LOOPS+=("$l")
	done
	btrfs device scan "${LOOPS[@]}" >/dev/null 2>&1 || :
}
raid_detach() {
	local l
	umount_image
	for l in "${LOOPS[@]}"; do
		btrfs device scan --forget "$l" >/dev/null 2>&1 || :
		losetup -d "$l" || vlog "could not detach $l"
	done
	LOOPS=()
}
trap 'raid_detach' EXIT
raid_mount() { # raid_mount IMG1 IMG2 [rw]: the top level at $MNT
	raid_attach "$1" "$2"
	MNT=$WORK/mnt
	mkdir -p "$MNT"
	mount -o "${3:-ro},subvolid=5" "${LOOPS[0]}" "$MNT" || die "mounting the RAID1 '$1' + '$2'"
}
# Both members present, none missing, every chunk profile RAID1.
raid_whole() {
	local show df
	show=$(btrfs filesystem show "$MNT") && df=$(btrfs filesystem df "$MNT") || return 1
	echo "$show"
	echo "$df"
	grep -q "Total devices 2" <<<"$show" && ! grep -qi missing <<<"$show" &&
		! grep -E '^(Data|Metadata|System)' <<<"$df" | grep -qv RAID1
}

# boots FLAVOUR FIRST LAST [vm_boot options…]: boots FIRST..LAST with the checks above.
boots() {
	local flavour=$1 first=$2 last=$3 n names newest
	shift 3
	for n in $(seq "$first" "$last"); do
		guest_script "boot$n" <<GUEST
ls / | grep ephemeral- | sed 's/^/seen: /'
echo "ephemeral $n" >/ephemeral-boot$n
echo "kept $n" >/var/lib/keep/boot$n
step members sh -c 'ls /sys/fs/btrfs/*/devices/'
step mounts cat /proc/self/mounts
step roots tabula roots list
step kmsg sh -c 'dmesg | grep -iE "tabula|btrfs"'
GUEST
		must "boot $n ($flavour): qemu exits by itself (no hang)" vm_boot "boot$n" --img "$IMG" --disk "$IMG2" "$@"
		check "boot $n: the guest reached its script" serial_has "boot$n" '^VMTEST: poweroff'
		check "boot $n: tabula retired the root" bash -c 'grep -q "retired .root." <<<"$1"' _ "$(section "boot$n" kmsg)"
		check "boot $n: not mounted degraded" bash -c '! grep -qi degraded <<<"$1"' _ "$(section "boot$n" kmsg)"
		check "boot $n: the kernel sees both members (vda, vdc)" bash -c '[[ $1 == *vda* && $1 == *vdc* ]]' _ "$(section "boot$n" members)"
		check "boot $n: no earlier ephemeral file was visible" serial_lacks "boot$n" '^seen: '
		check "boot $n: /var/lib/keep is a mount in the guest" serial_has "boot$n" ' /var/lib/keep '
		check "boot $n: 'tabula roots list' succeeded in the guest" test "$(step_rc "boot$n" roots)" = 0
		raid_mount "$IMG" "$IMG2"
		check "boot $n: two members, none missing, all RAID1" raid_whole
		check "boot $n: layout whole" layout_whole
		mapfile -t names < <(old_roots)
		check "boot $n: $((n - first + 1)) retired roots (${names[*]})" count_is "$((n - first + 1))" "${names[@]}"
		if [[ $n -gt $first ]]; then
			newest=$(newest_of "${names[@]}")
			check "boot $n: the newest retired root holds boot $((n - 1))'s ephemeral file" \
				file_has "$MNT/old_roots/$newest/ephemeral-boot$((n - 1))" "ephemeral $((n - 1))"
		fi
		for k in $(seq "$first" "$n"); do
			check "boot $n: persisted file of boot $k kept" file_has "$MNT/persist/var/lib/keep/boot$k" "kept $k"
		done
		raid_detach
	done
}

# --- The busybox initrd: a single-device image made RAID1 (device add, balance -dconvert/-mconvert).
IMG=$WORK/disk.img IMG2=$WORK/disk2.img INITRD=$WORK/initrd.img
make_initrd "$INITRD" "$conf"
make_image "$IMG" "$conf"
truncate -s 384M "$IMG2"
raid_mount "$IMG" "$IMG2" rw
btrfs device add -f "${LOOPS[1]}" "$MNT" >/dev/null || die "btrfs device add"
btrfs balance start -f -dconvert=raid1 -mconvert=raid1 -sconvert=raid1 "$MNT" >/dev/null || die "btrfs balance"
btrfs filesystem label "$MNT" vmraid || die "btrfs filesystem label"
must "the image is a RAID1 over two devices" raid_whole
raid_detach
bb_append="console=ttyS0 panic=-1 loglevel=7 rd.emergency=poweroff root=LABEL=vmraid rootfstype=btrfs rootflags=subvol=root rw"
boots busybox 1 3 --base-append "$bb_append"

# --- dracut with systemd (udev): a Debian 12 root on a fresh two-disk RAID1.
rootfs=$(debian_rootfs dracut) || exit 1
IMG=$WORK/sd1.img IMG2=$WORK/sd2.img INITRD=$WORK/initrd-dracut.img
rm -f "$IMG" "$IMG2"
truncate -s 2G "$IMG" && truncate -s 2G "$IMG2"
raid_attach "$IMG" "$IMG2"
mkfs.btrfs -q -f -L vmraid -d raid1 -m raid1 "${LOOPS[@]}" >/dev/null || die "mkfs.btrfs RAID1"
MNT=$WORK/mnt
mkdir -p "$MNT"
mount -o subvolid=5 "${LOOPS[0]}" "$MNT" || die "mounting the new RAID1"
btrfs -q subvolume create "$MNT/root" >/dev/null
r=$MNT/root
cp -a "$rootfs/." "$r/" || die "copying the debian root"
rm -f "$r/.done"
install_tabula_into "$r" "$conf" dracut
: >"$r/etc/fstab"
ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
echo vmtest >"$r/etc/hostname"
mkdir -p "$r/persist" "$r/var/lib/keep" "$r/sbin"
# The guest script disk, read by a oneshot unit as the busybox root's init reads it.
cat >"$r/usr/local/sbin/vmtest-run" <<'SH'
#!/bin/bash
echo "VMTEST: guest up"
mkdir -p /tmp/vmtest
if tar -xf /dev/vdb -C /tmp/vmtest 2>/dev/null; then
	cd /tmp/vmtest && . ./guestlib.sh && . ./boot.sh
	cd /
fi
sync
echo "VMTEST: poweroff"
systemctl --no-block poweroff
SH
chmod 0755 "$r/usr/local/sbin/vmtest-run"
guest_service "$r" vmtest-run "vm-tests guest script" "multi-user.target"
dracut_systemd_initrd "$r"
btrfs -q subvolume snapshot -r "$r" "$MNT/root-blank" >/dev/null
btrfs -q subvolume create "$MNT/persist" >/dev/null
btrfs -q subvolume create "$MNT/old_roots" >/dev/null
must "the dracut image is a RAID1 over two devices" raid_whole
raid_detach
sd_append="root=LABEL=vmraid rootfstype=btrfs rootflags=subvol=root rw console=ttyS0 panic=-1 rd.emergency=poweroff rd.shell=0"
sd_append+=" systemd.show_status=0 loglevel=4 rd.udev.log_level=3"
boots dracut 4 6 --initrd "$INITRD" --timeout "$SD_BOOT_TIMEOUT" --smp 2 --base-append "$sd_append"
