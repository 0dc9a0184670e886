# shellcheck shell=bash
# 06-no-rtc: the guest clock starts at 1970 (qemu -rtc base=…), jumps forward to 2030, falls back to
# 1970 and comes forward again. Retired roots keep sorting in boot order (sequence first), carry the
# clock they saw, `tabula roots list` lists them in that order, and the prune service's command removes
# nothing although keep_within = "1h" would, judged by the clock alone.
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[retention]
keep_last = 10
keep_within = "1h"
TOML
prune=$(sed -n 's/^ExecStart=//p' "$INITRD_SRC/systemd/tabula-prune.service")
rtcs=(1970-01-01T00:00:05 1970-01-01T00:00:05 2030-06-01T12:00:00 1970-01-01T00:00:05 2030-06-02T12:00:00)
years=(1970 1970 2030 1970 2030)
for i in "${!rtcs[@]}"; do
	n=$((i + 1))
	guest_script "boot$n" <<GUEST
echo "boot $n" >/marker
step date date -u +%Y
step prune $prune
step roots tabula roots list
GUEST
	must "boot $n (clock ${rtcs[$i]}): qemu exits by itself" vm_boot "boot$n" --rtc "${rtcs[$i]}"
	check "boot $n: the guest clock says ${years[$i]}" test "$(section "boot$n" date)" = "${years[$i]}"
	check "boot $n: the prune command succeeded" test "$(step_rc "boot$n" prune)" = 0
	mount_image "$IMG"
	mapfile -t names < <(old_roots)
	check "boot $n: nothing pruned: $n retired roots (${names[*]})" count_is "$n" "${names[@]}"
	for k in $(seq 2 "${#names[@]}"); do
		check "boot $n: retired root #$k (${names[$((k - 1))]}) is boot $((k - 1))'s" \
			file_has "$MNT/old_roots/${names[$((k - 1))]}/marker" "boot $((k - 1))"
	done
	check "boot $n: the newest name carries the clock's year ${years[$i]}" bash -c '[[ $1 == *${2}* ]]' _ "$(newest_of "${names[@]}")" "${years[$i]}"
	mapfile -t newest_first < <(printf '%s\n' "${names[@]}" | tac)
	# `roots list` is newest first: names appear in the reverse of their sort order.
	check "boot $n: 'tabula roots list' lists them newest boot first" bash -c '
		prev=0; shift_out=$1; shift
		for x; do p=$(grep -nF -- "$x" <<<"$shift_out" | head -1 | cut -d: -f1); [[ -n $p && $p -gt $prev ]] || exit 1; prev=$p; done' \
		_ "$(section "boot$n" roots)" "${newest_first[@]}"
	check "boot $n: layout whole" layout_whole
	umount_image
done
