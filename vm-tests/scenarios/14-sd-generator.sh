# shellcheck shell=bash
# heavy
# 14-sd-generator: the systemd generator is the tabula binary, with tabula's own parser. One Debian 12
# image (btrfs label "tabula root", a separate `home` subvolume in the root's fstab, alice's ~/.ssh
# persisted), one dracut systemd initrd; each boot gets its config appended to the initrd as a cpio.
#   boot 1: device = "UUID=<upper case>", /home a plain fstab entry: tabula persist mounts it itself;
#   boot 2: device = "LABEL=tabula root" (a space), /home marked x-initrd.mount: systemd mounts it after
#           initrd-parse-etc and tabula-persist waits for it (RequiresMountsFor= from the generator);
#   boot 3: device = "LABEL=no such disk": Wants= does not fail; tabula's own bounded wait ends in
#           on_failure = "continue", the old root boots, persistence still works.
# Checks: every boot reaches multi-user without failed units or failed dependencies; systemd finds the
# device unit the generator named before the rollback starts, and no device job times out; /home is mounted once and alice's ~/.ssh bind is
# visible on it; what the guest writes there lands in the persistent subvolume, not in the root.
LABEL="tabula root"
IMG=$WORK/disk.img INITRD=$WORK/initrd-dracut.img
base_conf() { # base_conf DEVICE-LINE…: the scenario's config with its own [layout] lines
	printf '[layout]\n'
	printf '%s\n' "$@"
	cat <<'TOML'

[boot]
on_failure = "continue"

[persist]
path = "/persist"
directories = ["/var/lib/vmtest"]

[[persist.users]]
name = "alice"
uid = 1000
gid = 1000
directories = [".ssh"]
TOML
}
base_conf 'device = "/dev/vda"' >"$WORK/tabula.toml"
patch_config "$WORK/tabula.toml"

debian_image "$WORK/tabula.toml" -L "$LABEL"
FSID=$(blkid -s UUID -o value "$IMG")
btrfs -q subvolume create "$MNT/home" >/dev/null
mkdir -p "$MNT/home/alice" && chown 1000:1000 "$MNT/home/alice"
printf 'UUID=%s /home btrfs subvol=home 0 0\n' "$FSID" >"$r/etc/fstab"
echo "alice:x:1000:1000:Alice:/home/alice:/bin/sh" >>"$r/etc/passwd"
echo "alice:x:1000:" >>"$r/etc/group"
ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
echo vmtest >"$r/etc/hostname"
mkdir -p "$r/persist" "$r/var/lib/vmtest"
cat >"$r/usr/local/sbin/vmtest-report" <<'SH'
#!/bin/bash
# Prints what the host checks, between markers, then powers off.
step() { local n=$1; shift; echo "VMTEST-BEGIN $n"; "$@" 2>&1; echo "VMTEST-END $n rc=$?"; }
echo "VMTEST: guest up"
step journal journalctl -b -o short-monotonic --no-pager
step mounts findmnt -rn -o TARGET,SOURCE,FSTYPE
step ssh bash -c 'cat /home/alice/.ssh/boots 2>/dev/null; true'
step failed systemctl --failed --no-legend
id=$(cat /proc/sys/kernel/random/boot_id)
echo "$id" >>/home/alice/.ssh/boots
touch "/home/alice/.ssh/key-$id" "/root/ephemeral-$id"
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

# initrd_with_config OUT CONFIG [DROPIN]: the dracut initrd with CONFIG appended as
# /etc/tabula/tabula.toml (the kernel unpacks concatenated archives in order; the later file wins), and
# DROPIN (a path under /etc/systemd/system, its text on stdin) when given.
initrd_with_config() {
	local out=$1 conf=$2 dropin=${3:-} tmp
	tmp=$(mktemp -d)
	install -D -m 0644 "$conf" "$tmp/etc/tabula/tabula.toml"
	if [[ -n $dropin ]]; then
		mkdir -p "$(dirname "$tmp/etc/systemd/system/$dropin")"
		cat >"$tmp/etc/systemd/system/$dropin"
	fi
	{
		cat "$INITRD"
		(cd "$tmp" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1)
	} >"$out"
	rm -rf "$tmp"
}
# set_blank_fstab OPTIONS: the blank's (so every new root's) /home fstab entry.
set_blank_fstab() {
	mount_image "$IMG" rw
	btrfs property set -ts "$MNT/root-blank" ro false
	printf 'UUID=%s /home btrfs %s 0 0\n' "$FSID" "$1" >"$MNT/root-blank/etc/fstab"
	btrfs property set -ts "$MNT/root-blank" ro true
	umount_image
}

append=" root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw console=ttyS0 panic=-1 rd.emergency=poweroff rd.shell=0"
append+=" systemd.show_status=1 loglevel=4 rd.udev.log_level=3 systemd.journald.forward_to_console=0"
UPPER=$(tr 'a-f' 'A-F' <<<"$FSID")
declare -a dev_line=("device = \"UUID=$UPPER\"" "device = \"LABEL=$LABEL\"" 'device = "LABEL=no such disk"')
declare -a fstab_opts=("subvol=home" "subvol=home,x-initrd.mount" "subvol=home")
declare -a want_retired=(1 2 2)
for n in 1 2 3; do
	i=$((n - 1))
	base_conf "${dev_line[$i]}" 'device_timeout = "10s"' >"$WORK/tabula$n.toml"
	patch_config "$WORK/tabula$n.toml"
	if [[ $n == 3 ]]; then
		# The device job of a disk that never comes waits 90 s by default (systemd 252 takes no
		# command-line setting for it): a test-only drop-in makes it short.
		printf '[Unit]\nJobRunningTimeoutSec=15\n' | initrd_with_config "$WORK/initrd$n.img" "$WORK/tabula$n.toml" \
			'dev-disk-by\x2dlabel-no\x5cx20such\x5cx20disk.device.d/vmtest-timeout.conf'
	else
		initrd_with_config "$WORK/initrd$n.img" "$WORK/tabula$n.toml"
	fi
	set_blank_fstab "${fstab_opts[$i]}"
	must "boot $n (${dev_line[$i]}, /home ${fstab_opts[$i]}): qemu exits by itself" vm_boot "boot$n" \
		--timeout "$SD_BOOT_TIMEOUT" --smp 2 --initrd "$WORK/initrd$n.img" --img "$IMG" --base-append "$append"
	check "boot $n: the guest reached multi-user and reported" serial_has "boot$n" '^VMTEST: poweroff'
	section "boot$n" journal >"$WORK/journal$n.txt"
	check "boot $n: no failed units" test -z "$(section "boot$n" failed)"
	check "boot $n: no failed dependency in the journal" bash -c '! grep -E "Dependency failed" "$1"' _ "$WORK/journal$n.txt"
	mounts=$(section "boot$n" mounts)
	check "boot $n: /home is mounted once, from the home subvolume" \
		bash -c '[[ $(grep -c "^/home " <<<"$1") == 1 ]] && grep -q "^/home .*\[/home\] btrfs" <<<"$1"' _ "$mounts"
	# findmnt lists mounts in mount order: a bind that /home was mounted over comes before /home.
	check "boot $n: alice's ~/.ssh is bound from persistent storage, after (on top of) /home" \
		awk '/^\/home / && !h { h = NR } /^\/home\/alice\/.ssh .*\[\/persist\/home\/alice\/.ssh\] btrfs/ { s = NR }
			END { exit !(h && s > h) }' <<<"$mounts"
	check "boot $n: ~/.ssh shows the earlier boots' lines ($((n - 1)))" \
		test "$(section "boot$n" ssh | grep -c .)" = $((n - 1))
	case $n in
	1) unit=$(systemd-escape --path --suffix=device "/dev/disk/by-uuid/$FSID") ;;
	2) unit=$(systemd-escape --path --suffix=device '/dev/disk/by-label/tabula\x20root') ;;
	esac
	case $n in
	1 | 2)
		# The unit systemd found is the one the generator asked for (named by the host's systemd-escape).
		# (ENVIRON, not awk -v: -v would turn the unit name's \x2d into a dash.)
		check "boot $n: systemd found $unit (tabula's Wants=) before the rollback started" env U="Found device $unit" awk '
			index($0, ENVIRON["U"]) && !f { f = NR }
			/Starting tabula-rollback|Starting tabula: roll/ && !r { r = NR }
			END { printf "found=%d rollback=%d\n", f, r; exit !(f && r && f < r) }' "$WORK/journal$n.txt"
		check "boot $n: tabula retired the root" grep -q "tabula: retired .root. as" "$WORK/journal$n.txt"
		check "boot $n: no device timed out" bash -c '! grep -E "Timed out waiting for device" "$1"' _ "$WORK/journal$n.txt"
		;;
	3)
		check "boot 3: systemd waited for the by-label link udev would make (escaped as udev does)" \
			grep -qE 'Timed out waiting for device .*by-label/no\\x20such\\x20disk' "$WORK/journal3.txt"
		check "boot 3: then tabula waited for the device itself and applied on_failure" \
			grep -qE "did not appear within 10s" "$WORK/journal3.txt"
		;;
	esac
	case $n in
	1) check "boot 1: tabula persist mounted /home (a plain fstab entry) before binding into it" \
		grep -qE "mounted 'UUID=$FSID' at '/sysroot/home' \(fstab\)" "$WORK/journal1.txt" ;;
	2) check "boot 2: systemd mounted /home (x-initrd.mount) before tabula-persist started" awk '
		/Mounted .*sysroot\/home|Mounted sysroot-home/ && !m { m = NR }
		/Starting tabula-persist|Starting tabula: mount the persistent/ && !p { p = NR }
		/mounted .* at .\/sysroot\/home. \(fstab\)/ { t = NR }
		END { printf "mount=%d persist=%d tabula-mounted=%d\n", m, p, t; exit !(m && p && m < p && !t) }' "$WORK/journal2.txt" ;;
	esac
	mount_image "$IMG"
	check "boot $n: layout whole" layout_whole
	mapfile -t names < <(old_roots)
	check "boot $n: ${want_retired[$i]} retired roots (${names[*]})" count_is "${want_retired[$i]}" "${names[@]}"
	check "boot $n: ~/.ssh writes land in the persistent subvolume ($n lines)" \
		test "$(grep -c . "$MNT/persist/home/alice/.ssh/boots" 2>/dev/null)" = "$n"
	check "boot $n: the bind's mount point is in the home subvolume, nothing under the root's /home" \
		bash -c '[[ -d $1/home/alice/.ssh && -z $(ls -A "$1/root/home") ]]' _ "$MNT"
	check "boot $n: nothing of ~/.ssh stayed in the home subvolume itself" \
		bash -c '[[ -z $(ls -A "$1/home/alice/.ssh") ]]' _ "$MNT"
	umount_image
done
