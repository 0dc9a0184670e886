# shellcheck shell=bash
# 02-restore: a file written outside the allowlist is gone after the next rollback; inside the guest
# `tabula roots diff -1` lists it and `tabula restore` brings it back with its content and mode.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"
TOML
guest_script boot1 <<'GUEST'
echo "precious data" >/etc/notes.txt
chmod 0640 /etc/notes.txt
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
check "boot 1: the guest ran its script" serial_has boot1 '^VMTEST: poweroff'
guest_script boot2 <<'GUEST'
step gone test ! -e /etc/notes.txt
step diff sh -c "tabula roots diff -1 | cat"
step restore tabula restore /etc/notes.txt
step content cat /etc/notes.txt
step mode stat -c %a /etc/notes.txt
GUEST
must "boot 2: qemu exits by itself" vm_boot boot2
check "boot 2: the file is gone after the rollback" test "$(step_rc boot2 gone)" = 0
check "boot 2: 'tabula roots diff -1' succeeds" test "$(step_rc boot2 diff)" = 0
check "boot 2: 'tabula roots diff -1' lists /etc/notes.txt" bash -c 'grep -q "/etc/notes.txt" <<<"$1"' _ "$(section boot2 diff)"
check "boot 2: 'tabula restore' succeeds" test "$(step_rc boot2 restore)" = 0
check "boot 2: restored content is right" test "$(section boot2 content)" = "precious data"
check "boot 2: restored mode is 0640" test "$(section boot2 mode)" = 640
mount_image "$IMG"
check "host: the restored file is in the live root" file_has "$MNT/root/etc/notes.txt" "precious data"
mapfile -t names < <(old_roots)
check "host: the retired root still holds the original" file_has "$MNT/old_roots/$(newest_of "${names[@]}")/etc/notes.txt" "precious data"
umount_image
