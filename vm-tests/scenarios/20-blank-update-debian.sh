# shellcheck shell=bash
# heavy
# 20-blank-update-debian: the README's day-to-day flow on a non-NixOS system. A debootstrapped Debian 12
# whose blank is that installed system (with a small .deb, built on the host with `dpkg-deb --build`,
# at /root/vmtest-hello.deb), booted through dracut's systemd initrd with tabula.
#   boot 1: `tabula blank update -- false` fails and changes nothing; `tabula blank update -- dpkg -i
#           /root/vmtest-hello.deb` succeeds; the running system does not have the package; an
#           ephemeral file is written.
#   boot 2: the package is installed (`dpkg -s`, its file is there), the ephemeral file is gone (a fresh
#           root), `tabula blank list` shows one retired blank.
# The host also checks the layout after each boot: the blank read-only, one retired blank, no staging.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "60s"

[persist]
path = "/persist"
directories = ["/var/lib/vmtest"]
TOML
patch_config "$conf"
IMG=$WORK/disk.img INITRD=$WORK/initrd-dracut.img

# The package: one file and a control file, no dependencies, no maintainer scripts.
pkg=$WORK/vmtest-hello
mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/vmtest"
echo "hello from vmtest-hello 1.0" >"$pkg/usr/share/vmtest/hello"
cat >"$pkg/DEBIAN/control" <<'CTL'
Package: vmtest-hello
Version: 1.0
Architecture: all
Maintainer: tabula vm-tests <vmtest@invalid>
Description: tabula vm-tests: a package installed into the blank
CTL
dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$WORK/vmtest-hello.deb" >/dev/null || die "dpkg-deb --build"

debian_image "$conf"
: >"$r/etc/fstab"
ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
echo vmtest >"$r/etc/hostname"
mkdir -p "$r/persist" "$r/var/lib/vmtest"
install -m 0644 "$WORK/vmtest-hello.deb" "$r/root/vmtest-hello.deb"
cat >"$r/usr/local/sbin/vmtest-report" <<'SH'
#!/bin/bash
# Prints what the host checks, between markers; boot 1 (package missing) updates the blank; powers off.
step() { local n=$1; shift; echo "VMTEST-BEGIN $n"; "$@" 2>&1; echo "VMTEST-END $n rc=$?"; }
echo "VMTEST: guest up"
step pkg dpkg -s vmtest-hello
step hello cat /usr/share/vmtest/hello
step ephemeral bash -c 'ls /root/ephemeral-*'
step blanks tabula blank list
if ! dpkg -s vmtest-hello >/dev/null 2>&1; then
	step failing tabula blank update -- false
	step update tabula blank update -- dpkg -i /root/vmtest-hello.deb
	step after dpkg -s vmtest-hello
	touch "/root/ephemeral-$(cat /proc/sys/kernel/random/boot_id)"
fi
step failed systemctl --failed --no-legend
sync
echo "VMTEST: poweroff"
systemctl --no-block poweroff
SH
chmod 0755 "$r/usr/local/sbin/vmtest-report"
guest_service "$r" vmtest-report "vm-tests report" "multi-user.target"
dracut_systemd_initrd "$r"
btrfs -q subvolume snapshot -r "$r" "$MNT/root-blank" >/dev/null
btrfs -q subvolume create "$MNT/persist" >/dev/null
btrfs -q subvolume create "$MNT/old_roots" >/dev/null
umount_image
retired_blanks() { find "$MNT/old_roots" -mindepth 1 -maxdepth 1 -type d -name 'blank-*' -printf '%f\n'; }

append=" root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw console=ttyS0 panic=-1 rd.emergency=poweroff rd.shell=0"
append+=" systemd.show_status=1 loglevel=4 rd.udev.log_level=3 systemd.journald.forward_to_console=0"
boot() {
	must "boot $1: qemu exits by itself (no hang)" vm_boot "boot$1" --timeout "$SD_BOOT_TIMEOUT" --smp 2 \
		--initrd "$INITRD" --img "$IMG" --base-append "$append"
	check "boot $1: the guest reached multi-user and reported" serial_has "boot$1" '^VMTEST: poweroff'
	check "boot $1: no failed units" test -z "$(section "boot$1" failed)"
}

boot 1
check "boot 1: the blank's system lacks the package" test "$(step_rc boot1 pkg)" = 1
check "boot 1: the failing update failed" test "$(step_rc boot1 failing)" = 1
check "boot 1: the update (dpkg -i) succeeded" test "$(step_rc boot1 update)" = 0
check "boot 1: the running system is unchanged" test "$(step_rc boot1 after)" = 1
mount_image "$IMG"
check "boot 1: layout whole, blank read-only" layout_whole
check "boot 1: dpkg knows the package in the new blank" \
	grep -qx 'Package: vmtest-hello' "$MNT/root-blank/var/lib/dpkg/status"
check "boot 1: the new blank has the package's file" \
	file_has "$MNT/root-blank/usr/share/vmtest/hello" "hello from vmtest-hello 1.0"
check "boot 1: the live root does not" test ! -e "$MNT/root/usr/share/vmtest/hello"
mapfile -t b < <(retired_blanks)
check "boot 1: one retired blank (${b[*]})" count_is 1 "${b[@]}"
check "boot 1: the retired blank is read-only" is_ro_subvol "$MNT/old_roots/${b[0]:-none}"
check "boot 1: the retired blank lacks the package" test ! -e "$MNT/old_roots/${b[0]:-none}/usr/share/vmtest/hello"
check "boot 1: no staging left" test ! -e "$MNT/root-blank.tabula-update"
check "boot 1: the ephemeral file is in the live root" compgen -G "$MNT/root/root/ephemeral-*"
umount_image

boot 2
check "boot 2: dpkg -s vmtest-hello succeeds" test "$(step_rc boot2 pkg)" = 0
check "boot 2: the package is installed" serial_has boot2 '^Status: install ok installed$'
check "boot 2: the package's file is there" serial_has boot2 '^hello from vmtest-hello 1\.0'
check "boot 2: boot 1's ephemeral file is gone (a fresh root)" test "$(step_rc boot2 ephemeral)" = 2
check "boot 2: no update ran" test -z "$(step_rc boot2 update)"
check "boot 2: tabula blank list shows one retired blank" \
	test "$(section boot2 blanks | grep -cE '^[0-9]+[[:space:]]blank-')" = 1
check "boot 2: tabula blank list shows the current blank" serial_has boot2 '^current[[:space:]]root-blank[[:space:]]'
mount_image "$IMG"
check "boot 2: layout whole, blank read-only" layout_whole
mapfile -t b < <(retired_blanks)
check "boot 2: still one retired blank (${b[*]})" count_is 1 "${b[@]}"
mapfile -t r < <(find "$MNT/old_roots" -mindepth 1 -maxdepth 1 -type d -name '0*' -printf '%f\n')
check "boot 2: two boots, two retired roots" count_is 2 "${r[@]}"
umount_image
