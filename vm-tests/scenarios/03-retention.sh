# shellcheck shell=bash
# 03-retention: six boots with keep_last = 3; after each boot the guest runs exactly the command of
# tabula-prune.service's ExecStart (read from initrd/systemd/tabula-prune.service). After the sixth,
# exactly the three newest retired roots remain, and after each boot the survivors are the newest ones.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[retention]
keep_last = 3
TOML
prune=$(sed -n 's/^ExecStart=//p' "$INITRD_SRC/systemd/tabula-prune.service")
[[ -n $prune ]] || die "no ExecStart in tabula-prune.service"
all=()
for n in 1 2 3 4 5 6; do
	guest_script "boot$n" <<GUEST
echo "boot $n" >/marker
step prune $prune
step roots tabula roots list
GUEST
	must "boot $n: qemu exits by itself" vm_boot "boot$n"
	check "boot $n: the prune service's command succeeded" test "$(step_rc "boot$n" prune)" = 0
	mount_image "$IMG"
	mapfile -t names < <(old_roots)
	# Every root that ever appeared, in boot order.
	for x in "${names[@]}"; do [[ " ${all[*]} " == *" $x "* ]] || all+=("$x"); done
	want=$((n < 3 ? n : 3))
	check "boot $n: $want retired roots remain (${names[*]})" count_is "$want" "${names[@]}"
	check "boot $n: the survivors are the newest $want" test "${names[*]}" = "${all[*]: -$want}"
	check "boot $n: layout whole" layout_whole
	[[ $n -ge 2 ]] && check "boot $n: the newest retired root is boot $((n - 1))'s" \
		file_has "$MNT/old_roots/$(newest_of "${names[@]}")/marker" "boot $((n - 1))"
	umount_image
done
check "6 boots made 6 distinct retired roots (${all[*]})" count_is 6 "${all[@]}"
