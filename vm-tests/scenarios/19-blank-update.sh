# shellcheck shell=bash
# 19-blank-update: `tabula blank update` on a booted system, through the real initrd. Boot 1 runs an
# update whose command fails (nothing changes) and one that installs a file into the blank (standing in
# for a package: the guest is a busybox root); boot 2 comes up from the new blank, so the file is in
# its root, and `tabula blank rollback` brings the previous blank back; boot 3 no longer has the file.
# The previous blank sits in old_roots as blank-<seq>-<time>, read-only; the blank is always read-only.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "20s"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]
TOML
IMG=$WORK/disk.img INITRD=$WORK/initrd.img
make_initrd "$INITRD" "$conf"
make_image "$IMG" "$conf"
blanks() { find "$MNT/old_roots" -mindepth 1 -maxdepth 1 -type d -name 'blank-*' -printf '%f\n' | LC_ALL=C sort; }

guest_script boot1 <<'GUEST'
step failing tabula blank update -- /bin/sh -c 'echo no >/usr/bin/vmtest-pkg; exit 7'
step update tabula blank update -- /bin/sh -c 'test -e /proc/self/stat && echo pkg 1 >/usr/bin/vmtest-pkg'
step here test -e /usr/bin/vmtest-pkg
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
check "boot 1: the failing update failed" test "$(step_rc boot1 failing)" = 1
check "boot 1: the update succeeded" test "$(step_rc boot1 update)" = 0
check "boot 1: the running system is unchanged" test "$(step_rc boot1 here)" = 1
mount_image "$IMG"
check "boot 1: layout whole, blank read-only" layout_whole
check "boot 1: the new blank has the file" file_has "$MNT/root-blank/usr/bin/vmtest-pkg" "pkg 1"
mapfile -t b < <(blanks)
check "boot 1: one retired blank (${b[*]})" count_is 1 "${b[@]}"
check "boot 1: the retired blank is read-only" is_ro_subvol "$MNT/old_roots/${b[0]:-none}"
check "boot 1: no staging left" test ! -e "$MNT/root-blank.tabula-update"
umount_image

guest_script boot2 <<'GUEST'
step here cat /usr/bin/vmtest-pkg
step rollback tabula blank rollback
GUEST
must "boot 2: qemu exits by itself" vm_boot boot2
check "boot 2: the root came from the new blank" serial_has boot2 '^pkg 1'
check "boot 2: blank rollback succeeded" test "$(step_rc boot2 rollback)" = 0

guest_script boot3 <<'GUEST'
step here test -e /usr/bin/vmtest-pkg
GUEST
must "boot 3: qemu exits by itself" vm_boot boot3
check "boot 3: the previous blank is back" test "$(step_rc boot3 here)" = 1
mount_image "$IMG"
check "boot 3: layout whole, blank read-only" layout_whole
mapfile -t r < <(find "$MNT/old_roots" -mindepth 1 -maxdepth 1 -type d -name '0*' -printf '%f\n')
check "boot 3: three boots, three retired roots" count_is 3 "${r[@]}"
umount_image
