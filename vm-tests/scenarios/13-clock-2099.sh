# shellcheck shell=bash
# 13-clock-2099: six boots, one a day from 2026-03-01 by the guest clock (qemu -rtc base=…), except the
# third, started at -rtc base=2099-01-01 (the guest reads a year far ahead): its initrd stamps the root
# it retires (#3, holding boot 2's marker) with that clock. After each boot the guest runs the prune
# service's command with keep_last = 1 and keep_daily = 7. One wrong clock affects at most its own root:
# #3 goes once the clock is right again, and every later root is still kept as its day's daily (before,
# all of them were "untrusted" and only the newest was kept). Survivors by boot: 1 | 1 2 | 1 2 3 |
# 1 2 4 | 1 2 4 5 | 1 2 4 5 6 (root #N is retired by boot N, with boot N's clock, and holds boot N-1's
# marker).
busybox_setup <<'TOML'
[layout]
device = "/dev/vda"

[retention]
keep_last = 1
keep_daily = 7
TOML
prune=$(sed -n 's/^ExecStart=//p' "$INITRD_SRC/systemd/tabula-prune.service")
[[ -n $prune ]] || die "no ExecStart in tabula-prune.service"
rtcs=(2026-03-01T08:00:00 2026-03-02T08:00:00 2099-01-01T08:00:00 2026-03-04T08:00:00 2026-03-05T08:00:00 2026-03-06T08:00:00)
want=("1" "1 2" "1 2 3" "1 2 4" "1 2 4 5" "1 2 4 5 6")
for i in "${!rtcs[@]}"; do
	n=$((i + 1))
	guest_script "boot$n" <<GUEST
echo "boot $n" >/marker
step prune $prune
step plan tabula roots prune --dry-run --json
GUEST
	must "boot $n (clock ${rtcs[$i]}): qemu exits by itself" vm_boot "boot$n" --rtc "${rtcs[$i]}"
	check "boot $n: the prune command succeeded" test "$(step_rc "boot$n" prune)" = 0
	mount_image "$IMG"
	mapfile -t names < <(old_roots)
	seqs=$(for x in "${names[@]}"; do echo $((10#${x%%-*})); done | tr '\n' ' ')
	check "boot $n: the retired roots are boots ${want[$i]:-none} (${names[*]})" test "${seqs% }" = "${want[$i]}"
	for x in "${names[@]}"; do
		s=$((10#${x%%-*}))
		[[ $s -ge 2 ]] && check "boot $n: $x holds boot $((s - 1))'s marker" file_has "$MNT/old_roots/$x/marker" "boot $((s - 1))"
	done
	if [[ $n -eq 3 ]]; then
		check "boot 3: its far-ahead clock stamped root #3 ($(newest_of "${names[@]}"))" \
			bash -c '[[ $1 =~ ^00003-(2[0-9]{3}) ]] && ((BASH_REMATCH[1] >= 2030))' _ "$(newest_of "${names[@]}")"
	fi
	if [[ $n -ge 4 ]]; then
		# Every remaining root is judged by time (no untrusted or out-of-step clock), the newest included.
		check "boot $n: every root's time is judged; the newest is its day's daily" bash -c '
			! grep -qE "\"clock\": \"(untrusted|out_of_step|future)\"" <<<"$1" &&
			grep -q "\"daily $2 (#1 of 7)\"" <<<"$1"' _ "$(section "boot$n" plan)" "${rtcs[$i]%T*}"
	fi
	check "boot $n: layout whole" layout_whole
	umount_image
done
