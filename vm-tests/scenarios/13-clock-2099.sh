# shellcheck shell=bash
# 13-clock-2099: six boots, one a day from 2026-03-01 by the guest clock (qemu -rtc base=…), except the
# third, whose clock reads 2099-01-01: its initrd stamps the root it retires (boot 2's) with 2099. After
# each boot the guest runs the prune service's command with keep_last = 1 and keep_daily = 7. One wrong
# clock affects at most its own root: the 2099 root goes once the clock is right again, and every later
# root is still judged by the daily rule (before, all of them were "untrusted" and only the newest was
# kept). Expected survivors after each boot, by boot: 1 | 1 | 1 2 | 1 3 | 1 3 4 | 1 3 4 5.
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
want=("" "1" "1 2" "1 3" "1 3 4" "1 3 4 5")
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
		check "boot $n: $x holds boot $s's marker" file_has "$MNT/old_roots/$x/marker" "boot $s"
	done
	if [[ $n -eq 3 ]]; then
		check "boot 3: it stamped boot 2's root with its clock, 2099" bash -c '[[ $1 == 00002-2099-* ]]' _ "$(newest_of "${names[@]}")"
	fi
	if [[ $n -ge 4 ]]; then
		# The newest root is kept by daily too, not only as the newest: its clock is judged.
		check "boot $n: the newest root's time is judged (daily), not untrusted" \
			bash -c 'grep -q "\"daily\"" <<<"$1" && ! grep -q "time_untrusted" <<<"$1"' _ "$(section "boot$n" plan)"
	fi
	check "boot $n: layout whole" layout_whole
	umount_image
done
