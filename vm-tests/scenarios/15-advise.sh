# shellcheck shell=bash
# 15-advise: boot 1 writes state in a new place (/var/lib/newapp). In boot 2, `tabula advise --boots 1` names it
# and `tabula persist add` makes it persistent in the running guest (bind-mounted, the config edited
# with its comment kept). The host then rebuilds the initrd from the edited config, as
# `update-initramfs -u` would. Boot 3 still has the state, bind-mounted from persistent storage.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "20s"

[persist]
path = "/persist"
# kept across boots
directories = ["/var/lib/keep"]
TOML
guest_script boot1 <<'GUEST'
mkdir -p /var/lib/newapp
echo "state 1" >/var/lib/newapp/state
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
check "boot 1: the guest ran its script" serial_has boot1 '^VMTEST: poweroff'

guest_script boot2 <<'GUEST'
step gone test ! -e /var/lib/newapp/state
mkdir -p /var/lib/newapp
echo "state 2" >/var/lib/newapp/state
step advise tabula advise --boots 1
step add tabula persist add /var/lib/newapp
step mounted grep -q " /var/lib/newapp " /proc/self/mounts
echo "written after the add" >/var/lib/newapp/more
step config cat /etc/tabula/tabula.toml
GUEST
must "boot 2: qemu exits by itself" vm_boot boot2
check "boot 2: boot 1's state was erased by the rollback" test "$(step_rc boot2 gone)" = 0
check "boot 2: 'tabula advise' succeeds" test "$(step_rc boot2 advise)" = 0
check "boot 2: 'tabula advise' names /var/lib/newapp" bash -c 'grep -q "1/1 .*/var/lib/newapp/" <<<"$1"' _ "$(section boot2 advise)"
check "boot 2: 'tabula advise' suggests it" bash -c 'grep -q "\"/var/lib/newapp\",  # suggested" <<<"$1"' _ "$(section boot2 advise)"
check "boot 2: 'tabula persist add' succeeds" test "$(step_rc boot2 add)" = 0
check "boot 2: /var/lib/newapp is bind-mounted now" test "$(step_rc boot2 mounted)" = 0
check "boot 2: the config lists it" bash -c 'grep -q "\"/var/lib/newapp\"" <<<"$1"' _ "$(section boot2 config)"
check "boot 2: the config keeps its comment" bash -c 'grep -q "^# kept across boots" <<<"$1"' _ "$(section boot2 config)"

mount_image "$IMG"
check "host: persistent storage holds the state" file_has "$MNT/persist/var/lib/newapp/state" "state 2"
check "host: and what was written after the add" file_has "$MNT/persist/var/lib/newapp/more" "written after the add"
cp "$MNT/root/etc/tabula/tabula.toml" "$WORK/tabula-edited.toml"
umount_image
# What `update-initramfs -u` (or dracut, mkinitcpio) does: the initrd gets the edited config.
make_initrd "$INITRD" "$WORK/tabula-edited.toml"

guest_script boot3 <<'GUEST'
step state cat /var/lib/newapp/state
step more cat /var/lib/newapp/more
step mounted grep -q " /var/lib/newapp " /proc/self/mounts
GUEST
must "boot 3: qemu exits by itself" vm_boot boot3
check "boot 3: the state is still there" test "$(section boot3 state)" = "state 2"
check "boot 3: so is what was written after the add" test "$(section boot3 more)" = "written after the add"
check "boot 3: /var/lib/newapp is bind-mounted from persistent storage" test "$(step_rc boot3 mounted)" = 0
