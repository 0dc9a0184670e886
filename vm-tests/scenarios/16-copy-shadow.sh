# shellcheck shell=bash
# 16-copy-shadow: /etc/shadow persisted with how = "copy" through the busybox initrd. In boot 1, busybox
# `passwd` changes alice's password (it writes /etc/shadow+ and renames it over /etc/shadow, which a bind
# mount would refuse with EBUSY); `tabula persist sync` (what tabula-persist-sync.service runs) copies it
# back. Boot 2 starts from the blank again and has the new hash in /etc/shadow.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "20s"

[persist]
path = "/persist"
files = [{ path = "/etc/shadow", how = "copy" }]
TOML
old_alice='alice:$6$vmtest$OLDHASHOLDHASHOLDHASH:19000:0:99999:7:::'
mount_image "$IMG" rw
mkdir -p "$MNT/persist/etc"
printf 'root:*:19000:0:99999:7:::\n%s\n' "$old_alice" >"$MNT/persist/etc/shadow"
chmod 0640 "$MNT/persist/etc/shadow"
umount_image

guest_script boot1 <<'GUEST'
step before grep '^alice:' /etc/shadow
step mounted grep -c ' /etc/shadow ' /proc/self/mounts
step ino-before stat -c %i /etc/shadow
step passwd sh -c 'printf "tabula-vm\ntabula-vm\n" | passwd alice'
step ino-after stat -c %i /etc/shadow
step after grep '^alice:' /etc/shadow
step status-before-sync tabula status --json
step sync tabula persist sync
step status-after-sync tabula status --json
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
check "boot 1: the guest reached its script" serial_has boot1 '^VMTEST: poweroff'
check "boot 1: /etc/shadow is the persistent copy" test "$(section boot1 before)" = "$old_alice"
check "boot 1: /etc/shadow is not a mount point" test "$(section boot1 mounted)" = 0
check "boot 1: passwd succeeded" test "$(step_rc boot1 passwd)" = 0
check "boot 1: passwd replaced the file by rename (new inode)" \
	test "$(section boot1 ino-before)" != "$(section boot1 ino-after)"
new_alice=$(section boot1 after)
check "boot 1: alice has a new hash" bash -c '[[ $1 == alice:\$* && $1 != "$2" ]]' _ "$new_alice" "$old_alice"
check "boot 1: status said 'not synced' before the sync" \
	bash -c 'grep -q "\"synced\": false" <<<"$1"' _ "$(section boot1 status-before-sync)"
check "boot 1: persist sync succeeded" test "$(step_rc boot1 sync)" = 0
check "boot 1: persist sync copied it" bash -c 'grep -q "^copied  *$1" <<<"$2"' _ /etc/shadow "$(section boot1 sync)"
check "boot 1: status says synced after the sync" \
	bash -c 'grep -q "\"synced\": true" <<<"$1"' _ "$(section boot1 status-after-sync)"
mount_image "$IMG"
check "host: /persist/etc/shadow has the new hash" grep -qxF -- "$new_alice" "$MNT/persist/etc/shadow"
check "host: /persist/etc/shadow kept its mode" test "$(stat -c %a "$MNT/persist/etc/shadow")" = 640
check "host: no temporary file left in /persist/etc" test "$(ls -A "$MNT/persist/etc")" = shadow
umount_image

guest_script boot2 <<'GUEST'
step after-reboot grep '^alice:' /etc/shadow
step blank cat /etc/vmtest-blank
GUEST
must "boot 2: qemu exits by itself" vm_boot boot2
check "boot 2: the guest reached its script" serial_has boot2 '^VMTEST: poweroff'
check "boot 2: the root is a fresh one (blank marker)" test "$(section boot2 blank)" = blank
check "boot 2: /etc/shadow has the hash set in boot 1" test "$(section boot2 after-reboot)" = "$new_alice"
