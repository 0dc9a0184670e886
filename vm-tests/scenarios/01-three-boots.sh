# shellcheck shell=bash
# 01-three-boots: three boots through the busybox initrd. Each boot writes a file outside the
# allowlist and one inside it. Checks after each boot (on the host, image loop-mounted read-only):
# the previous boot's ephemeral file is gone from root and sits in the newest retired root, persisted
# files accumulate, one retired root per boot, names sort in boot order, the blank stays read-only, and
# `tabula roots list` inside the guest shows every retired root.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/vda"
device_timeout = "20s"

[persist]
path = "/persist"
directories = ["/var/lib/keep"]

[retention]
keep_last = 10
TOML
IMG=$WORK/disk.img INITRD=$WORK/initrd.img
make_initrd "$INITRD" "$conf"
make_image "$IMG" "$conf"

prev_names=()
for n in 1 2 3; do
	cat >"$WORK/boot$n.sh" <<GUEST
ls / | grep ephemeral- | sed 's/^/seen: /'
echo "ephemeral $n" >/ephemeral-boot$n
echo "kept $n" >/var/lib/keep/boot$n
step roots tabula roots list
step mounts cat /proc/self/mounts
GUEST
	must "boot $n: qemu exits by itself (no hang)" vm_boot "boot$n"
	check "boot $n: the guest reached its script" serial_has "boot$n" '^VMTEST: poweroff'
	check "boot $n: no earlier ephemeral file was visible in the guest" serial_lacks "boot$n" '^seen: '
	check "boot $n: /var/lib/keep is a mount in the guest" serial_has "boot$n" ' /var/lib/keep '
	check "boot $n: 'tabula roots list' succeeded in the guest" test "$(step_rc "boot$n" roots)" = 0

	mount_image "$IMG"
	check "boot $n: layout whole, blank read-only" layout_whole
	check "boot $n: root holds only this boot's ephemeral file" \
		test "$(cd "$MNT/root" && ls -d ephemeral-* 2>/dev/null | tr '\n' ' ')" = "ephemeral-boot$n "
	mapfile -t names < <(old_roots)
	check "boot $n: one retired root per boot (${names[*]})" count_is "$n" "${names[@]}"
	check "boot $n: retired roots are named <sequence>-<time>" \
		bash -c 'for x; do [[ $x =~ ^[0-9]+-[0-9]{4}-?[0-9]{2}-?[0-9]{2}T[0-9]{6}Z ]] || { echo "bad name $x"; exit 1; }; done' _ "${names[@]}"
	check "boot $n: earlier retired roots are untouched and keep their names" \
		test "${names[*]:0:${#prev_names[@]}}" = "${prev_names[*]}"
	if [[ $n -ge 2 ]]; then
		newest=$(newest_of "${names[@]}")
		check "boot $n: the newest retired root holds boot $((n - 1))'s ephemeral file" \
			file_has "$MNT/old_roots/$newest/ephemeral-boot$((n - 1))" "ephemeral $((n - 1))"
		check "boot $n: retired roots are read-only" is_ro_subvol "$MNT/old_roots/$newest"
	fi
	for k in $(seq 1 "$n"); do
		check "boot $n: persisted file of boot $k kept" file_has "$MNT/persist/var/lib/keep/boot$k" "kept $k"
	done
	for x in "${names[@]}"; do
		check "boot $n: 'tabula roots list' in the guest shows $x" bash -c 'grep -qF -- "$1" <<<"$2"' _ "$x" "$(section "boot$n" roots)"
	done
	prev_names=("${names[@]}")
	umount_image
done
