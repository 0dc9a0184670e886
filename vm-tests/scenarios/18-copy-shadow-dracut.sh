# shellcheck shell=bash
# heavy
# 18-copy-shadow-dracut: /etc/shadow persisted with how = "copy" on Debian 12 with a dracut systemd
# initrd and tabula's sync units. The path unit comes from tabula-generator (the binary) (installed by
# `make install`: `tabula persist units --dir` at every boot). Boot 1: the initrd copies /etc/shadow
# in (no mount); chpasswd (PAM: a new file renamed over the old) changes root's password and
# tabula-persist-sync.path syncs it within seconds; with the path unit stopped, a second chpasswd is
# synced only by the shutdown unit's ExecStop. Boot 2 (a fresh root from the blank) has the second
# hash. No failed units.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "60s"

[persist]
path = "/persist"
files = [{ path = "/etc/shadow", how = "copy" }]
TOML
patch_config "$conf"
IMG=$WORK/disk.img INITRD=$WORK/initrd-dracut.img

debian_image "$conf"
: >"$r/etc/fstab"
ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
echo vmtest >"$r/etc/hostname"
ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
mkdir -p "$r/persist"
cat >"$r/usr/local/sbin/vmtest-report" <<'SH'
#!/bin/bash
# Prints what the host checks, between markers, then powers off.
step() { local n=$1; shift; echo "VMTEST-BEGIN $n"; "$@" 2>&1; echo "VMTEST-END $n rc=$?"; }
root_line() { grep '^root:' "$1"; }
echo "VMTEST: guest up"
step at-boot root_line /etc/shadow
step mounted bash -c 'grep -c " /etc/shadow " /proc/self/mounts'
step path-unit systemctl is-active tabula-persist-sync.path
step path-unit-file systemctl show -p FragmentPath tabula-persist-sync.path
step chpasswd1 bash -c 'echo "root:tabula-vm-$RANDOM" | chpasswd'
step live1 root_line /etc/shadow
# The path unit's sync: give it up to 30 s.
for _ in $(seq 60); do
	[[ "$(root_line /persist/etc/shadow)" == "$(root_line /etc/shadow)" ]] && break
	sleep 0.5
done
step persisted1 root_line /persist/etc/shadow
step sync-service systemctl show -p Result -p ExecMainStatus tabula-persist-sync.service
# Now only the shutdown unit can sync the next change.
step stop-path systemctl stop tabula-persist-sync.path
step chpasswd2 bash -c 'echo "root:tabula-vm-$RANDOM-2" | chpasswd'
step live2 root_line /etc/shadow
step persisted2-before-shutdown root_line /persist/etc/shadow
step shutdown-unit systemctl is-active tabula-persist-sync-shutdown.service
step failed systemctl --failed --no-legend
sync
echo "VMTEST: poweroff"
systemctl --no-block poweroff
SH
chmod 0755 "$r/usr/local/sbin/vmtest-report"
guest_service "$r" vmtest-report "vm-tests report" "multi-user.target"
# What the generator runs, tried into a scratch directory of the chroot.
in_chroot "$r" /usr/lib/systemd/system-generators/tabula-generator /tmp/gen /tmp/gen.early /tmp/gen.late \
	>"$WORK/units.txt" 2>&1
check "the generator wrote the path unit and its wants link" \
	test -f "$r/tmp/gen/tabula-persist-sync.path" -a -L "$r/tmp/gen/paths.target.wants/tabula-persist-sync.path"
check "the path unit watches /etc/shadow" grep -qx 'PathChanged=/etc/shadow' "$r/tmp/gen/tabula-persist-sync.path"
rm -rf "$r/tmp/gen"
for u in tabula-persist-sync.service tabula-persist-sync-shutdown.service; do
	check "make install put $u in /usr/lib/systemd/system" test -f "$r/usr/lib/systemd/system/$u"
done
dracut_systemd_initrd "$r"
btrfs -q subvolume snapshot -r "$r" "$MNT/root-blank" >/dev/null
btrfs -q subvolume create "$MNT/persist" >/dev/null
btrfs -q subvolume create "$MNT/old_roots" >/dev/null
# The persistent copy starts as Debian's own.
mkdir -p "$MNT/persist/etc"
cp -a "$r/etc/shadow" "$MNT/persist/etc/shadow"
blank_root=$(grep '^root:' "$r/etc/shadow")
umount_image

append=" root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw console=ttyS0 panic=-1 rd.emergency=poweroff rd.shell=0"
append+=" systemd.show_status=1 loglevel=4 rd.udev.log_level=3 systemd.journald.forward_to_console=0"
# pick BOOT STEP REGEX: the step's line matching REGEX (systemd's status lines share the console).
pick() { section "$1" "$2" | grep -E -- "$3" | tail -n 1; }
prev=$blank_root
for n in 1 2; do
	must "boot $n: qemu exits by itself (no hang)" vm_boot "boot$n" --timeout "$SD_BOOT_TIMEOUT" --smp 2 \
		--initrd "$INITRD" --img "$IMG" --base-append "$append"
	check "boot $n: the guest reached multi-user and reported" serial_has "boot$n" '^VMTEST: poweroff'
	check "boot $n: /etc/shadow is the persistent copy (the previous boot's last hash)" \
		test "$(pick "boot$n" at-boot ^root:)" = "$prev"
	check "boot $n: /etc/shadow is not a mount point" test "$(pick "boot$n" mounted "^[0-9]+$")" = 0
	check "boot $n: tabula-persist-sync.path is active" test "$(pick "boot$n" path-unit "^(in)?active$|^failed$")" = active
	check "boot $n: the path unit comes from the generator" \
		test "$(pick "boot$n" path-unit-file ^FragmentPath=)" = FragmentPath=/run/systemd/generator/tabula-persist-sync.path
	check "boot $n: chpasswd succeeded" test "$(step_rc "boot$n" chpasswd1)" = 0
	live1=$(pick "boot$n" live1 ^root:)
	check "boot $n: chpasswd changed root's hash" test "$live1" != "$prev"
	check "boot $n: the path unit synced it (persistent copy = live)" test "$(pick "boot$n" persisted1 ^root:)" = "$live1"
	check "boot $n: tabula-persist-sync.service succeeded" \
		bash -c 'grep -q "^Result=success" <<<"$1" && grep -q "^ExecMainStatus=0" <<<"$1"' _ "$(section "boot$n" sync-service)"
	live2=$(pick "boot$n" live2 ^root:)
	check "boot $n: the second change is not synced before shutdown (path unit stopped)" \
		test "$(pick "boot$n" persisted2-before-shutdown ^root:)" = "$live1" -a "$live2" != "$live1"
	check "boot $n: the shutdown unit is active (its ExecStop syncs)" test "$(pick "boot$n" shutdown-unit "^(in)?active$|^failed$")" = active
	check "boot $n: no failed units" test -z "$(pick "boot$n" failed "^[^[]")"
	mount_image "$IMG"
	check "boot $n: the shutdown sync wrote the second hash to /persist/etc/shadow" \
		grep -qxF -- "$live2" "$MNT/persist/etc/shadow"
	check "boot $n: no temporary file left in /persist/etc" test "$(ls -A "$MNT/persist/etc")" = shadow
	umount_image
	prev=$live2
done
