# shellcheck shell=bash
# 07-cmdline: tabula.skip keeps the current root for one boot; tabula.boot=-1 boots the newest retired
# root once as a writable snapshot and leaves the retired root itself intact; the next normal boot rolls
# back as usual.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"
TOML
guest_script boot1 <<'GUEST'
echo one >/marker
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
guest_script boot2 <<'GUEST'
step marker cat /marker
echo two >/marker
GUEST
must "boot 2 (tabula.skip): qemu exits by itself" vm_boot boot2 --append " tabula.skip"
check "boot 2: the root was kept (boot 1's marker visible)" test "$(section boot2 marker)" = one
mount_image "$IMG"
mapfile -t names < <(old_roots)
check "boot 2: nothing retired by the skipped boot" count_is 1 "${names[@]}"
umount_image

guest_script boot3 <<'GUEST'
step marker cat /marker
echo three >/marker
GUEST
must "boot 3: qemu exits by itself" vm_boot boot3
check "boot 3: normal rollback: no marker in the fresh root" test "$(step_rc boot3 marker)" = 1
mount_image "$IMG"
mapfile -t names < <(old_roots)
check "boot 3: two retired roots" count_is 2 "${names[@]}"
check "boot 3: the newest retired root holds boot 2's marker" file_has "$MNT/old_roots/$(newest_of "${names[@]}")/marker" two
umount_image

# Whether the current root is retired before the chosen one is booted is tabula's choice: the check
# accepts boot 3's root (retired this boot) or boot 2's (newest before), and requires that the one
# booted is left exactly as it was.
guest_script boot4 <<'GUEST'
step marker cat /marker
echo "changed in boot 4" >/marker
GUEST
must "boot 4 (tabula.boot=-1): qemu exits by itself" vm_boot boot4 --append " tabula.boot=-1"
seen=$(section boot4 marker)
check "boot 4: booted a retired root's content (saw '$seen')" bash -c '[[ $1 == two || $1 == three ]]' _ "$seen"
mount_image "$IMG"
booted=""
for x in $(old_roots); do
	[[ -n $seen && $(cat "$MNT/old_roots/$x/marker" 2>/dev/null) == "$seen" ]] && booted=$x
done
check "boot 4: the retired root it booted is intact ($booted)" test -n "$booted"
check "boot 4: that retired root is still read-only" is_ro_subvol "$MNT/old_roots/${booted:-none}"
check "boot 4: boot 3's root was retired, not lost" bash -c 'grep -qsx three "$1"/*/marker' _ "$MNT/old_roots"
check "boot 4: no retired root took boot 4's write" bash -c '! grep -rqs "changed in boot 4" "$1"/*/marker' _ "$MNT/old_roots"
check "boot 4: layout whole" layout_whole
umount_image

guest_script boot5 <<'GUEST'
step marker cat /marker
GUEST
must "boot 5: qemu exits by itself" vm_boot boot5
check "boot 5: a normal boot is back to a fresh root" test "$(step_rc boot5 marker)" = 1
mount_image "$IMG"
check "boot 5: the retired root booted in boot 4 is still intact" file_has "$MNT/old_roots/${booted:-none}/marker" "$seen"
check "boot 5: layout whole" layout_whole
umount_image
