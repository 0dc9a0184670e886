# shellcheck shell=bash
# needs: fault
# 04-power-cut: qemu is killed (kill -9: no shutdown, no flush of the guest's caches) in the middle of
# the initrd rollback, then the machine boots normally. Two kinds of cut:
#  - at every fault point of the fault-injection build (`tabula rollback --list-fault-points`):
#    TABULA_FAULT=<step> on the kernel command line reaches tabula through /init's environment and
#    aborts it there; the kernel then drops tabula's private mount (committing what tabula did up to
#    that step) and the power is cut right after ("last unmount" in the log). This makes each
#    intermediate on-disk state durable, so every recovery path of the next boot is exercised.
#  - timed kills at several delays after tabula first mounts the disk: true power cuts that lose
#    whatever btrfs had not committed.
#  - cuts during a `tabula.boot=-1` rollback (which snapshots last boot's root, not the blank): the
#    staging root it leaves must not be promoted by the next normal boot, which must come up fresh.
# `root` is also the filesystem's default subvolume, so the rotation moves the default at every boot.
# After each recovery boot: the layout is whole, the default subvolume is `root`, every retired root seen
# before is still there, every earlier boot's root is found among the retired roots (nothing lost), the
# live root holds only this boot's marker (it is fresh) and persisted files are all there.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]

[retention]
keep_last = 100
TOML
make_initrd "$WORK/initrd-fault.img" "$conf" "$TABULA_FAULT_BIN"
# `root` is the default subvolume too, so that every step (moving the default along) is reached and cut.
mount_image "$IMG" rw
btrfs -q subvolume set-default "$MNT/root" || die "set-default"
umount_image
mapfile -t points < <("$TABULA_FAULT_BIN" rollback --list-fault-points | awk 'NF { print $1 }')
must "the fault-injection build lists its fault points (${points[*]})" test "${#points[@]}" -gt 0
# Timed cuts: seconds after the kernel logs tabula's first mount of the disk (the rollback itself takes
# ~0.3 s of guest time under TCG, so these land before, during and after it).
delays=(0 0.1 0.2 0.3 0.45)

good=0 seen=()
good_boot() { # a normal boot that writes its marker; then the host checks nothing was lost
	local name=$1 k
	guest_script "$name" <<GUEST
echo "$name" >/marker-$good
echo "$name" >/var/lib/keep/$good
GUEST
	must "$name: qemu exits by itself" vm_boot "$name"
	check "$name: the guest came up" serial_has "$name" '^VMTEST: poweroff'
	mount_image "$IMG"
	check "$name: layout whole" layout_whole
	check "$name: the default subvolume is root" bash -c '[[ $(btrfs subvolume get-default "$1") == *" path root" ]]' _ "$MNT"
	local -a names
	mapfile -t names < <(old_roots)
	for x in "${seen[@]}"; do
		check "$name: retired root $x still there" test -d "$MNT/old_roots/$x"
	done
	for k in $(seq 0 $((good - 1))); do
		check "$name: boot #$k's root is among the retired roots" bash -c 'ls "$1"/*/marker-"$2" >/dev/null 2>&1' _ "$MNT/old_roots" "$k"
		check "$name: persisted file #$k kept" test -f "$MNT/persist/var/lib/keep/$k"
	done
	check "$name: the live root is this boot's alone" bash -c 'n=$2; set -- "$1"/marker-*; [[ $# == 1 && $1 == */marker-$n ]]' _ "$MNT/root" "$good"
	seen=("${names[@]}")
	umount_image
	good=$((good + 1))
}

good_boot boot0
for p in "${points[@]}"; do
	vm_boot "cut-$p" --initrd "$WORK/initrd-fault.img" --append " rd.emergency=shell TABULA_FAULT=$p" \
		--kill-at 'last unmount of filesystem|Kernel panic|VMTEST: guest up'
	check "cut-$p: the fault point was reached before the guest ran" serial_has "cut-$p" "fault injection: aborting at $p"
	check "cut-$p: the power was cut before the guest ran" serial_lacks "cut-$p" '^VMTEST: guest up'
	good_boot "after-$p"
done
for d in "${delays[@]}"; do
	vm_boot "cut-${d}s" --kill-at 'scanned by tabula' --kill-delay "$d"
	vlog "cut-${d}s: last tabula line before the cut: $(serial "cut-${d}s" | grep 'tabula' | tail -1)"
	good_boot "after-${d}s"
done
# Cut during a `tabula.boot=` rollback at the points that leave its staging root behind (with and without
# a `root`): the next normal boot discards it and comes up fresh (good_boot's "this boot's alone").
for p in after-snapshot after-intent after-retire; do
	vm_boot "bootcut-$p" --initrd "$WORK/initrd-fault.img" --append " rd.emergency=shell tabula.boot=-1 TABULA_FAULT=$p" \
		--kill-at 'last unmount of filesystem|Kernel panic|VMTEST: guest up'
	check "bootcut-$p: the fault point was reached in a tabula.boot rollback" serial_has "bootcut-$p" "fault injection: aborting at $p"
	good_boot "after-bootcut-$p"
	check "after-bootcut-$p: the leftover staging root was discarded, not promoted" serial_has "after-bootcut-$p" "discarding 'root.tabula-new'"
done
