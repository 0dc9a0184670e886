# shellcheck shell=bash
# 09-symlink-refused: alice's persistent home holds a planted symlink (/persist/home/alice/.ssh -> /etc).
# The boot goes on, that entry is refused (logged), /etc is untouched, other entries are mounted.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]

[[persist.users]]
name = "alice"
directories = [".ssh", "Documents"]
TOML
mount_image "$IMG" rw
mkdir -p "$MNT/persist/home/alice/Documents"
echo "alice's doc" >"$MNT/persist/home/alice/Documents/doc.txt"
ln -s /etc "$MNT/persist/home/alice/.ssh"
chown -R -h 1000:1000 "$MNT/persist/home/alice"
umount_image
guest_script boot1 <<'GUEST'
step ssh-mounted grep -c " /home/alice/.ssh " /proc/self/mounts
step etc-mounted grep -c " /etc " /proc/self/mounts
step doc cat /home/alice/Documents/doc.txt
step keep-mounted grep -c " /var/lib/keep " /proc/self/mounts
step ssh-kind ls -ld /home/alice/.ssh
GUEST
must "boot 1: qemu exits by itself" vm_boot boot1
check "boot 1: the boot went on to the root's init" serial_has boot1 '^VMTEST: poweroff'
check "boot 1: nothing mounted on /home/alice/.ssh" test "$(section boot1 ssh-mounted)" = 0
check "boot 1: nothing mounted on /etc" test "$(section boot1 etc-mounted)" = 0
check "boot 1: the other entries were mounted (Documents)" test "$(section boot1 doc)" = "alice's doc"
check "boot 1: the other entries were mounted (/var/lib/keep)" test "$(section boot1 keep-mounted)" = 1
check "boot 1: the log names the refused entry" serial_has boot1 'tabula: .*\.ssh.*refused \(symlink'
mount_image "$IMG"
check "host: /etc in the new root is the blank's" diff -r --no-dereference "$MNT/root-blank/etc" "$MNT/root/etc"
check "host: the planted symlink itself is left alone" test "$(readlink "$MNT/persist/home/alice/.ssh")" = /etc
check "host: the live root has no symlink to /etc at /home/alice/.ssh" test "$(readlink "$MNT/root/home/alice/.ssh" 2>/dev/null)" != /etc
umount_image
