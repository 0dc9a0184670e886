# shellcheck shell=bash
# 05-rollback-failure: when the rollback cannot be done the machine still boots its old, untouched
# root and the log says why; with on_failure = "emergency" the boot stops instead, root untouched.
#   boot 1: normal, leaves /marker in the root.
#   boot 2: [layout] device names a disk that never appears (device_timeout 3s) -> old root boots.
#   boot 3: the blank snapshot was deleted -> old root boots, the log names the blank.
#   boot 4: same, with on_failure = "emergency" -> the initrd stops (rd.emergency=poweroff), the root
#           is left as it was.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[boot]
on_failure = "continue"
TOML
guest_script boot1 <<'GUEST'
echo "from boot 1" >/marker
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1

# boot 2: the device never shows up.
sed -e 's|^device = .*|device = "/dev/vdz"\ndevice_timeout = "3s"|' "$conf" >"$WORK/nodev.toml"
make_initrd "$WORK/initrd-nodev.img" "$WORK/nodev.toml"
guest_script boot2 <<'GUEST'
step marker cat /marker
GUEST
must "boot 2 (device missing): qemu exits by itself" vm_boot boot2 --initrd "$WORK/initrd-nodev.img"
check "boot 2: the old root booted (boot 1's marker is there)" test "$(section boot2 marker)" = "from boot 1"
check "boot 2: the log says the device is missing" serial_has boot2 'tabula.*/dev/vdz'
mount_image "$IMG"
mapfile -t names < <(old_roots)
check "boot 2: nothing was retired" count_is 1 "${names[@]}"
check "boot 2: layout whole" layout_whole
umount_image

# boot 3: the blank is gone.
mount_image "$IMG" rw
btrfs -q subvolume delete "$MNT/root-blank" >/dev/null || die "deleting root-blank"
umount_image
guest_script boot3 <<'GUEST'
step marker cat /marker
GUEST
must "boot 3 (blank missing): qemu exits by itself" vm_boot boot3
check "boot 3: the old root booted (boot 1's marker is there)" test "$(section boot3 marker)" = "from boot 1"
check "boot 3: the log names the missing blank" serial_has boot3 'tabula.*root-blank'
mount_image "$IMG"
mapfile -t names < <(old_roots)
check "boot 3: nothing was retired" count_is 1 "${names[@]}"
check "boot 3: root is still there with boot 1's marker" file_has "$MNT/root/marker" "from boot 1"
umount_image

# boot 4: same, but the policy is to stop.
sed -e 's|^on_failure = .*|on_failure = "emergency"|' "$conf" >"$WORK/emergency.toml"
make_initrd "$WORK/initrd-emergency.img" "$WORK/emergency.toml"
guest_script boot4 <<'GUEST'
echo "boot 4 ran" >/boot4
GUEST
must "boot 4 (emergency policy): qemu exits by itself" vm_boot boot4 --initrd "$WORK/initrd-emergency.img"
check "boot 4: the initrd stopped the boot" serial_has boot4 'stopping the boot'
check "boot 4: the root was never started" serial_lacks boot4 '^VMTEST: guest up'
mount_image "$IMG"
check "boot 4: root untouched (boot 1's marker, no boot 4 file)" bash -c '[[ -e $1/marker && ! -e $1/boot4 ]]' _ "$MNT/root"
mapfile -t names < <(old_roots)
check "boot 4: nothing was retired" count_is 1 "${names[@]}"
umount_image
