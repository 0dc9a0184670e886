# shellcheck shell=bash
# heavy
# 08-dracut-systemd: a debootstrapped Debian 12 with tabula installed by `make install install-dracut`,
# its initrd built by dracut (systemd initrd) in a chroot, booted twice to multi-user.
# Checks: lsinitrd shows the binary, config, units, wants/requires links and generator in place; in
# the journal, tabula-rollback runs after /dev/vda appears and finishes before /sysroot is mounted, and
# tabula-persist runs after /sysroot is mounted and finishes before switch-root; persisted paths are
# mounted after switch-root; /etc/machine-id (empty in the blank, persisted) is the same on both boots;
# the prune service ran on the running system; the host sees the rollback on disk. A third boot uses
# dracut's shell initrd (same module, pre-mount and pre-pivot hooks instead of units).
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "60s"

[persist]
path = "/persist"
directories = ["/var/lib/vmtest"]
files = ["/etc/machine-id"]

[retention]
keep_last = 5
TOML
patch_config "$conf"
IMG=$WORK/disk.img INITRD=$WORK/initrd-dracut.img

debian_image "$conf"
# The machine's own view: no fstab entries (root comes from the command line); no machine-id in the
# blank (so only persistence can keep it stable: the README's recipe, systemd makes one on the first
# boot and `tabula persist --root / --adopt` keeps it); a test unit that reports and powers off.
: >"$r/etc/fstab"
rm -f "$r/etc/machine-id" "$r/var/lib/dbus/machine-id"
ln -sf /dev/null "$r/etc/systemd/system/systemd-firstboot.service"
# The README's machine-id recipe: machine-id-commit expects a tmpfs, not a bind mount; first boots only.
mkdir -p "$r/etc/systemd/system/systemd-machine-id-commit.service.d"
printf '[Unit]\nConditionFirstBoot=yes\n' >"$r/etc/systemd/system/systemd-machine-id-commit.service.d/tabula.conf"
echo vmtest >"$r/etc/hostname"
ln -sf /dev/null "$r/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@tty1.service"
mkdir -p "$r/persist" "$r/var/lib/vmtest"
cat >"$r/usr/local/sbin/vmtest-report" <<'SH'
#!/bin/bash
# Prints what the host checks, between markers, then powers off.
step() { local n=$1; shift; echo "VMTEST-BEGIN $n"; "$@" 2>&1; echo "VMTEST-END $n rc=$?"; }
echo "VMTEST: guest up"
step journal journalctl -b -o short-monotonic --no-pager
step machine-id cat /etc/machine-id
if ! grep -q " /etc/machine-id " /proc/self/mounts; then step adopt tabula persist --root / --adopt; fi
step mounts findmnt -rn -o TARGET,SOURCE,FSTYPE
step prune systemctl show -p Result -p ExecMainStatus -p ActiveState tabula-prune.service
step roots tabula roots list
step failed systemctl --failed --no-legend
date >"/var/lib/vmtest/boot-$(cat /proc/sys/kernel/random/boot_id)"
touch "/root/ephemeral-$(cat /proc/sys/kernel/random/boot_id)"
sync
echo "VMTEST: poweroff"
systemctl --no-block poweroff
SH
chmod 0755 "$r/usr/local/sbin/vmtest-report"
guest_service "$r" vmtest-report "vm-tests report" "multi-user.target tabula-prune.service" tabula-prune.service tabula-prune.timer
dracut_systemd_initrd "$r"
cp "$INITRD" "$r/tmp/check.img"
in_chroot "$r" lsinitrd /tmp/check.img >"$WORK/lsinitrd.txt" 2>&1
rm -f "$r/tmp/check.img"
for f in usr/bin/tabula etc/tabula/tabula.toml \
	usr/lib/systemd/system/tabula-rollback.service usr/lib/systemd/system/tabula-persist.service; do
	check "lsinitrd: the dracut image holds $f" grep -qE " $f$" "$WORK/lsinitrd.txt"
done
check "lsinitrd: the generator is a link to the binary" \
	grep -qE " usr/lib/systemd/system-generators/tabula-generator -> (/usr/bin/tabula|(\.\./)+bin/tabula)$" "$WORK/lsinitrd.txt"
check "lsinitrd: no shell glue" bash -c '! grep -q tabula-initrd "$1"' _ "$WORK/lsinitrd.txt"
# `systemctl enable` links (dracut puts them under etc/).
for f in initrd.target.wants/tabula-rollback.service initrd.target.wants/tabula-persist.service \
	sysroot.mount.requires/tabula-rollback.service; do
	check "lsinitrd: the dracut image enables $f" grep -qE " (etc|usr/lib)/systemd/system/$f -> " "$WORK/lsinitrd.txt"
done
# The same module in dracut's shell initrd (no systemd in the initrd): pre-mount and pre-pivot hooks.
in_chroot "$r" dracut -q --force --no-hostonly --kver "$KVER" --drivers "virtio_pci virtio_blk btrfs" \
	--omit "systemd systemd-initrd dracut-systemd" \
	--modules "base fs-lib kernel-modules udev-rules rootfs-block btrfs tabula" \
	/tmp/initrd-dracut-shell.img >"$WORK/dracut-shell.log" 2>&1
check "dracut builds a shell (non-systemd) initrd with the tabula module" test -s "$r/tmp/initrd-dracut-shell.img"
mv "$r/tmp/initrd-dracut-shell.img" "$WORK/initrd-dracut-shell.img" 2>/dev/null
btrfs -q subvolume snapshot -r "$r" "$MNT/root-blank" >/dev/null
btrfs -q subvolume create "$MNT/persist" >/dev/null
btrfs -q subvolume create "$MNT/old_roots" >/dev/null
umount_image

append=" root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw console=ttyS0 panic=-1 rd.emergency=poweroff rd.shell=0"
append+=" systemd.show_status=1 loglevel=4 rd.udev.log_level=3 systemd.journald.forward_to_console=0"
declare -A mid
for n in 1 2; do
	must "boot $n: qemu exits by itself (no hang)" vm_boot "boot$n" --timeout "$SD_BOOT_TIMEOUT" --smp 2 \
		--initrd "$INITRD" --img "$IMG" --base-append "$append"
	check "boot $n: the guest reached multi-user and reported" serial_has "boot$n" '^VMTEST: poweroff'
	section "boot$n" journal >"$WORK/journal$n.txt"
	# Order in the initrd, from the journal (systemd's own start/finish lines, in time order).
	check "boot $n: order: /dev/vda < rollback start < rollback end < /sysroot mount < persist start < persist end < switch-root" \
		awk -f - "$WORK/journal$n.txt" <<'AWK'
		function at(re,   i) { for (i = 1; i <= n; i++) if (line[i] ~ re) return i; return 0 }
		{ line[++n] = $0 }
		END {
			dev = at("Found device .*(vda|/dev/vda)"); rs = at("Starting tabula-rollback|Starting tabula: roll")
			re = at("Finished tabula-rollback|Finished tabula: roll"); sm = at("Mounting .*sysroot|Mounting /sysroot")
			smd = at("Mounted .*sysroot|Mounted /sysroot"); ps = at("Starting tabula-persist|Starting tabula: mount the persistent")
			pe = at("Finished tabula-persist|Finished tabula: mount the persistent"); sw = at("Starting .*[Ss]witch [Rr]oot")
			printf "device=%d rollback=%d..%d sysroot=%d..%d persist=%d..%d switch-root=%d\n", dev, rs, re, sm, smd, ps, pe, sw
			exit !(dev && rs && re && sm && smd && ps && pe && sw && dev < rs && rs < re && re < sm && smd < ps && ps < pe && pe < sw)
		}
AWK
	check "boot $n: /var/lib/vmtest is mounted after switch-root" bash -c 'grep -q "^/var/lib/vmtest " <<<"$1"' _ "$(section "boot$n" mounts)"
	check "boot $n: /etc/machine-id is mounted after switch-root" bash -c 'grep -q "^/etc/machine-id " <<<"$1"' _ "$(section "boot$n" mounts)"
	mid[$n]=$(section "boot$n" machine-id | head -1)
	check "boot $n: machine-id is set (${mid[$n]})" bash -c '[[ $1 =~ ^[0-9a-f]{32}$ ]]' _ "${mid[$n]}"
	check "boot $n: tabula-prune.service ran and succeeded" bash -c 'grep -q "^Result=success" <<<"$1" && grep -q "^ExecMainStatus=0" <<<"$1"' _ "$(section "boot$n" prune)"
	check "boot $n: 'tabula roots list' works on the running system" test "$(step_rc "boot$n" roots)" = 0
	check "boot $n: no failed units" test -z "$(section "boot$n" failed)"
	mount_image "$IMG"
	check "boot $n: layout whole" layout_whole
	mapfile -t names < <(old_roots)
	check "boot $n: $n retired roots (${names[*]})" count_is "$n" "${names[@]}"
	check "boot $n: persisted machine-id on disk matches the guest's" file_has "$MNT/persist/etc/machine-id" "${mid[$n]:-none}"
	check "boot $n: root holds exactly one ephemeral file, this boot's" \
		bash -c 'set -- "$1"/root/ephemeral-*; [[ $# == 1 && -e $1 ]]' _ "$MNT/root"
	[[ $n == 2 ]] && check "boot 2: boot 1's ephemeral file went to the retired root" \
		bash -c 'ls "$1"/ephemeral-* >/dev/null' _ "$MNT/old_roots/$(newest_of "${names[@]}")/root"
	umount_image
done
check "machine-id is stable across boots (${mid[1]:-} = ${mid[2]:-})" test -n "${mid[1]:-}" -a "${mid[1]:-}" = "${mid[2]:-}"

# Boot 3: dracut's shell initrd (hooks instead of units).
must "boot 3 (dracut shell initrd): qemu exits by itself (no hang)" vm_boot boot3 --timeout "$SD_BOOT_TIMEOUT" --smp 2 \
	--initrd "$WORK/initrd-dracut-shell.img" --img "$IMG" --base-append "$append"
check "boot 3: the guest reached multi-user and reported" serial_has boot3 '^VMTEST: poweroff'
section boot3 journal >"$WORK/journal3.txt"
# Kernel log order: tabula retires the root and unmounts; then the root is mounted (the next "first
# mount"); then persist; then dracut switches root.
check "boot 3: order: rollback < its unmount < /sysroot mount < persist < switch root" awk '
	/tabula: retired .root. as/ && !r { r = NR }
	r && /BTRFS info .*last unmount/ && !u { u = NR }
	u && /BTRFS info .*first mount/ && !m { m = NR }
	m && /tabula: .\/var\/lib\/vmtest. .*in place/ && !p { p = NR }
	p && /dracut: Switching root/ && !s { s = NR }
	END { printf "retired=%d unmount=%d mount=%d persist=%d switch=%d\n", r, u, m, p, s; exit !(r && u && m && p && s) }' "$WORK/journal3.txt"
check "boot 3: /var/lib/vmtest is mounted after switch-root (pre-pivot persist)" bash -c 'grep -q "^/var/lib/vmtest " <<<"$1"' _ "$(section boot3 mounts)"
check "boot 3: machine-id unchanged (${mid[1]:-})" test "$(section boot3 machine-id | head -1)" = "${mid[1]:-none}"
mount_image "$IMG"
mapfile -t names < <(old_roots)
check "boot 3: 3 retired roots (${names[*]})" count_is 3 "${names[@]}"
check "boot 3: layout whole" layout_whole
umount_image
