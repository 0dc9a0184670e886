# shellcheck shell=bash
# needs: fault
# 17-crash-prefixes: what the disk holds after a power cut *between any two writes* of a rollback and
# a prune, the way xfstests and CrashMonkey test filesystems.
#  1. On the host, tabula retires four roots (each holding a nested subvolume holding another), and
#     the live root gets the same shape.
#  2. One boot, all in the initrd: dm-log-writes over /dev/vda logs every write to /dev/vdc; marks go
#     into the log around `tabula rollback` and `tabula roots prune` (keep_last = 2: three roots go).
#  3. On the host, log-writes-replay (our own reader of the kernel's log format) rebuilds the disk
#     after every flush/FUA entry and after random entries between them (seeded sample, bounded). The
#     full replay must equal the disk qemu left: a check of the replayer itself.
#  4. Each prefix, on its own copy and loop device: it mounts; every metadata file present parses and
#     names its subvolume; retired roots from before are whole (during the prune: whole, gone, or
#     still with metadata, never half-deleted without it); blank and persist untouched; the live root
#     is somewhere. Then `tabula rollback` (as the next boot would) succeeds and leaves exactly one
#     writable `root`, a fresh snapshot of the blank or the untouched old root; the old live root is
#     retired with intact metadata, and the same checks hold again. A prefix of the prune must also be
#     resumable: a second `tabula roots prune` finishes the deletions and leaves the rest whole.
# Knobs: VMT_CRASH_SEED (replay a sample), VMT_CRASH_MAX (barrier prefixes, default 120),
# VMT_CRASH_RANDOM (random prefixes, default 40). Failing prefixes' images, tabula output and the log
# are kept in failed/.

LWR_DIR=$VMT_DIR/log-writes-replay
LWR=$LWR_DIR/target/release/log-writes-replay
must "log-writes-replay: its parser tests pass" \
	cargo test -q --manifest-path "$LWR_DIR/Cargo.toml"
must "log-writes-replay builds" \
	cargo build -q --release --manifest-path "$LWR_DIR/Cargo.toml"
must "jq and dmsetup are installed on the host" command -v jq dmsetup

# ---------------------------------------------------------------------------------------------------
# Loop devices of our own, mounted by device (never `-o loop`: every copy has the same filesystem
# uuid, so each device is made to forget its btrfs registration before it is detached; otherwise the
# next copy, with a lower generation, would be refused).
LOOPS=()
lo_attach() { # lo_attach IMG: sets LO
	LO=$(losetup --find --show "$1") || die "losetup '$1'"
	LOOPS+=("$LO")
}
lo_detach() {
	btrfs device scan --forget "$LO" >/dev/null 2>&1
	losetup -d "$LO" 2>/dev/null
	local keep=() l
	for l in "${LOOPS[@]}"; do [[ $l == "$LO" ]] || keep+=("$l"); done
	LOOPS=("${keep[@]}")
	LO=
}
lo_mount() { # lo_mount [ro|rw]
	MNT=$WORK/mnt
	mkdir -p "$MNT"
	mount -t btrfs -o "${1:-ro},subvolid=5" "$LO" "$MNT"
}
crash_cleanup() {
	umount_image
	local l
	for l in "${LOOPS[@]}"; do
		btrfs device scan --forget "$l" >/dev/null 2>&1
		losetup -d "$l" 2>/dev/null
	done
	mountpoint -q "$SCRATCH" && umount "$SCRATCH"
}
trap crash_cleanup EXIT
# The prefix copies live on a tmpfs of this namespace: each one sees a few btrfs commits, and a flush
# through a loop device on the shared disk costs far more than the check itself.
SCRATCH=$WORK/scratch
mkdir -p "$SCRATCH"
mount -t tmpfs -o size=2g,mode=0700 tmpfs "$SCRATCH" || die "mounting a tmpfs for the prefix copies"

# tabula on the host, against our loop device.
host_tabula() {
	printf '[layout]\ndevice = "%s"\ndevice_timeout = "5s"\n\n[retention]\nkeep_last = 2\n' "$LO" >"$WORK/host.toml"
	TABULA_CONFIG=$WORK/host.toml "$TABULA_BIN" --log stderr "$@"
}

# Subvolume facts, read with two `btrfs subvolume list` calls per mounted state (load_subvols) instead
# of several processes per question: the checks run for every prefix on a busy machine.
declare -A SV_UUID SV_PARENT SV_RO
SV_LOADED=0
load_subvols() {
	SV_UUID=() SV_PARENT=() SV_RO=()
	local pu u p
	while read -r pu u p; do
		p=$MNT/${p#<FS_TREE>/}
		SV_UUID[$p]=$u
		[[ $pu == - ]] || SV_PARENT[$p]=$pu
	done < <(btrfs subvolume list -a -u -q "$MNT" | awk '{ print $9, $11, $13 }')
	while read -r p; do SV_RO[$MNT/${p#<FS_TREE>/}]=1; done < <(btrfs subvolume list -r "$MNT" | awk '{ print $9 }')
	SV_LOADED=1
}
forget_subvols() { SV_LOADED=0; }
# Field FIELD ("UUID" or "Parent UUID") of subvolume PATH (empty when it is none).
subvol_field() {
	if [[ $SV_LOADED == 1 ]]; then
		case $2 in UUID) echo "${SV_UUID[$1]:-}" ;; *) echo "${SV_PARENT[$1]:-}" ;; esac
		return
	fi
	btrfs subvolume show "$1" 2>/dev/null | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -1
}
sv_is() { if [[ $SV_LOADED == 1 ]]; then [[ -n ${SV_UUID[$1]:-} ]]; else is_subvol "$1"; fi; }
sv_ro() { if [[ $SV_LOADED == 1 ]]; then [[ -n ${SV_RO[$1]:-} ]]; else is_ro_subvol "$1"; fi; }
# A root's content signature: its marker and its nested subvolumes' files (each must be a subvolume).
root_sig() {
	local r=$1
	if ! sv_is "$r/var/lib/machines" || ! sv_is "$r/var/lib/machines/inner"; then
		echo "no-nested"
		return
	fi
	echo "$(cat "$r/crash-marker" 2>/dev/null)|$(cat "$r/var/lib/machines/nested" 2>/dev/null)|$(cat "$r/var/lib/machines/inner/file" 2>/dev/null)"
}
tree_sig() { (cd "$1" && find . -printf '%p %s %m %l\n' | LC_ALL=C sort | sha256sum | cut -c1-16); }
shape_root() { # shape_root TAG: the live root gets a marker and two nested subvolumes
	local r=$MNT/root
	echo "$1" >"$r/crash-marker"
	mkdir -p "$r/var/lib"
	btrfs -q subvolume create "$r/var/lib/machines" >/dev/null
	echo "nested $1" >"$r/var/lib/machines/nested"
	btrfs -q subvolume create "$r/var/lib/machines/inner" >/dev/null
	echo "inner $1" >"$r/var/lib/machines/inner/file"
	head -c 200000 /dev/urandom >"$r/var/lib/machines/inner/blob"
}

# ---------------------------------------------------------------------------------------------------
# 1. The starting image.
conf=$WORK/tabula.toml
cat >"$conf" <<'TOML'
[layout]
device = "/dev/mapper/lw"
device_timeout = "20s"

[retention]
keep_last = 2
TOML
patch_config "$conf"
IMG=$WORK/disk.img
make_image "$IMG" "$conf"
lo_attach "$IMG"
for i in 1 2 3 4; do
	lo_mount rw || die "mounting the image"
	shape_root "root-$i"
	[[ $i == 1 ]] && echo "persisted" >"$MNT/persist/crash-persist"
	umount_image
	must "setup: tabula rollback #$i on the host" host_tabula rollback
done
lo_mount rw || die "mounting the image"
shape_root live
declare -A want_uuid want_sig
mapfile -t before < <(old_roots)
for r in "${before[@]}"; do
	want_uuid[$r]=$(subvol_field "$MNT/old_roots/$r" UUID)
	want_sig[$r]=$(root_sig "$MNT/old_roots/$r")
done
live_uuid=$(subvol_field "$MNT/root" UUID)
live_sig=$(root_sig "$MNT/root")
blank_uuid=$(subvol_field "$MNT/root-blank" UUID)
blank_sig=$(tree_sig "$MNT/root-blank")
persist_sig=$(tree_sig "$MNT/persist")
umount_image
lo_detach
must "setup: four retired roots with nested subvolumes (${before[*]})" count_is 4 "${before[@]}"
must "setup: their content is as written" test "${want_sig[${before[0]}]}" = "root-1|nested root-1|inner root-1"
cp --sparse=always "$IMG" "$SCRATCH/start.img"

# ---------------------------------------------------------------------------------------------------
# 2. The recorded boot: an initramfs of its own (busybox base + dm modules + dmsetup with its
# libraries, which Debian only ships dynamically linked) whose /init records the rollback and prune.
ovl=$(mktemp -d)
install -D -m 0755 "$TABULA_FAULT_BIN" "$ovl/usr/bin/tabula"
install -D -m 0644 "$conf" "$ovl/etc/tabula/tabula.toml"
install -D -m 0644 "$VMT_DIR/guestlib.sh" "$ovl/guestlib.sh"
dmsetup_bin=$(command -v dmsetup)
install -D -m 0755 "$dmsetup_bin" "$ovl/usr/sbin/dmsetup"
for lib in $(ldd "$dmsetup_bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
	install -D -m 0755 "$lib" "$ovl$lib"
done
: >"$ovl/etc/crash-modules"
for m in $(modprobe -d "$KROOT" -S "$KVER" --show-depends dm-log-writes | awk '$1 == "insmod" { print $2 }'); do
	install -D -m 0644 "$m" "$ovl/${m#"$KROOT"}"
	echo "${m#"$KROOT"}" >>"$ovl/etc/crash-modules"
done
cat >"$ovl/init" <<'INIT'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /tmp
cat /etc/initrd-modules /etc/crash-modules | while read -r m; do [ -n "$m" ] && insmod "$m" 2>/dev/null; done
echo "VMTEST: guest up"
. /guestlib.sh
i=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdc ]; do
	i=$((i + 1))
	[ "$i" -gt 300 ] && break
	sleep 0.1
done
# No udev in here: libdevmapper makes the /dev/mapper node itself.
export DM_DISABLE_UDEV=1
mark() { dmsetup message lw 0 mark "$1"; }
step dm-create dmsetup create lw --table "0 $(blockdev --getsz /dev/vda) log-writes /dev/vda /dev/vdc"
step mark-rollback-begin mark rollback-begin
step rollback tabula --log stderr rollback
step mark-rollback-end mark rollback-end
step mark-prune-begin mark prune-begin
step prune tabula --log stderr roots prune
step mark-prune-end mark prune-end
step dm-status dmsetup status lw
step dm-remove dmsetup remove lw
blockdev --flushbufs /dev/vdc
sync
echo "VMTEST: poweroff"
poweroff -f
INIT
chmod 0755 "$ovl/init"
busybox_base_cpio
{
	cat "$BASE_CPIO"
	(cd "$ovl" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1)
} >"$WORK/initrd.img"
rm -rf "$ovl"
LOGDEV=$WORK/log.img
rm -f "$LOGDEV" && truncate -s 512M "$LOGDEV"
must "recorded boot: qemu exits by itself" vm_boot record --initrd "$WORK/initrd.img" --disk "$LOGDEV"
for s in dm-create mark-rollback-begin rollback mark-rollback-end mark-prune-begin prune mark-prune-end dm-remove; do
	check "recorded boot: step $s succeeded" test "$(step_rc record "$s")" = 0
done
logging_on() { section record dm-status | grep -E 'log-writes [0-9]+ [0-9]+' | grep -v logging_disabled >/dev/null; }
check "recorded boot: dm-log-writes logged everything ($(section record dm-status | tr '\n' ' '))" logging_on

# ---------------------------------------------------------------------------------------------------
# 3. The log and the replayer's self-check.
"$LWR" list "$LOGDEV" >"$WORK/log-entries" 2>&1
must "the log parses ($(wc -l <"$WORK/log-entries") entries)" test -s "$WORK/log-entries"
for m in rollback-begin rollback-end prune-begin prune-end; do
	must "the log holds mark $m" "$LWR" mark "$LOGDEV" "$m"
done
full_replay() {
	cp --sparse=always "$SCRATCH/start.img" "$SCRATCH/full.img" &&
		"$LWR" replay "$LOGDEV" "$SCRATCH/full.img" 0 "$(wc -l <"$WORK/log-entries")" &&
		cmp "$SCRATCH/full.img" "$IMG"
}
must "replaying the whole log onto the starting image gives the disk qemu left" full_replay
rm -f "$SCRATCH/full.img"
lo_attach "$IMG"
lo_mount ro || die "mounting the recorded image"
mapfile -t after < <(old_roots)
declare -A to_delete
for r in "${before[@]}"; do [[ -d $MNT/old_roots/$r ]] || to_delete[$r]=1; done
umount_image
lo_detach
must "recorded boot: the prune deleted at least two roots (${!to_delete[*]})" test "${#to_delete[@]}" -ge 2
vlog "retired roots before: ${before[*]}; after: ${after[*]}"

# ---------------------------------------------------------------------------------------------------
# 4. Every chosen prefix.
FK=()          # failure kinds of the prefix being checked
fail_kind() { FK+=("$1"); echo "  FAIL $1: $2" >>"$WORK/prefixes.out"; }
meta_ok() { # meta_ok NAME: old_roots/NAME.json parses, names NAME and the subvolume's uuid
	local u m
	m=$(jq -r --arg n "$1" 'if type == "object" and .name == $n and (.uuid | type) == "string" then .uuid else error("bad") end' \
		"$MNT/old_roots/$1.json" 2>/dev/null) || return 1
	u=$(subvol_field "$MNT/old_roots/$1" UUID)
	[[ -z $u || $m == "$u" ]]
}
# The checks that hold in any state: STAGE is "found" (the prefix as a power cut left it) or "next"
# (after the next boot's rollback); PHASE is rollback or prune.
check_state() {
	local stage=$1 phase=$2 f n r p states=""
	for f in "$MNT"/old_roots/*.json; do
		[[ -e $f ]] || continue
		n=$(basename "$f" .json)
		[[ $n == .* ]] && continue
		meta_ok "$n" || fail_kind "$stage:torn-metadata" "old_roots/$n.json does not parse or does not match its subvolume"
	done
	for r in "${before[@]}"; do
		p=$MNT/old_roots/$r
		local whole=0 present=0 meta=0
		[[ -d $p ]] && present=1
		[[ -e $p.json ]] && meta_ok "$r" && meta=1
		if [[ $present == 1 && $meta == 1 && $(subvol_field "$p" UUID) == "${want_uuid[$r]}" &&
			$(root_sig "$p") == "${want_sig[$r]}" ]] && sv_ro "$p"; then whole=1; fi
		if [[ -n ${to_delete[$r]:-} ]]; then
			if [[ $whole == 1 ]]; then states+=" ${r%%-*}=whole"; elif [[ $present == 0 ]]; then states+=" ${r%%-*}=gone"; else states+=" ${r%%-*}=partial"; fi
		fi
		if [[ $phase == rollback || -z ${to_delete[$r]:-} ]]; then
			[[ $whole == 1 ]] || fail_kind "$stage:retired-root-damaged" "$r is not whole (present=$present meta=$meta)"
		elif [[ $present == 1 && $meta == 0 ]]; then
			fail_kind "$stage:half-deleted-without-metadata" "$r is there without its metadata"
		fi
	done
	if ! [[ $(subvol_field "$MNT/root-blank" UUID) == "$blank_uuid" && $(tree_sig "$MNT/root-blank") == "$blank_sig" ]] ||
		! sv_ro "$MNT/root-blank"; then
		fail_kind "$stage:blank-changed" "root-blank is not the blank"
	fi
	[[ $(tree_sig "$MNT/persist") == "$persist_sig" ]] || fail_kind "$stage:persist-changed" "persist changed"
	# The old live root: still `root`, or retired (a power cut may leave it without metadata; the next
	# boot must complete it).
	local where=""
	[[ -d $MNT/root && $(subvol_field "$MNT/root" UUID) == "$live_uuid" ]] && where=root
	for p in "$MNT"/old_roots/*/; do
		p=${p%/}
		[[ $(subvol_field "$p" UUID) == "$live_uuid" ]] && where=old_roots/$(basename "$p")
	done
	if [[ -z $where ]]; then
		fail_kind "$stage:live-root-lost" "the old live root is nowhere"
	elif [[ $(root_sig "$MNT/$where") != "$live_sig" ]]; then
		fail_kind "$stage:live-root-damaged" "$where lost content"
	elif [[ $stage == next && $where == old_roots/* ]] && ! { meta_ok "${where#old_roots/}" && sv_ro "$MNT/$where"; }; then
		fail_kind "next:live-root-without-metadata" "$where is not read-only with metadata after the next rollback"
	fi
	LIVE_WHERE=$where
	local m=no
	[[ $where == old_roots/* ]] && meta_ok "${where#old_roots/}" && m=yes
	echo "  $stage: live root at ${where:-nowhere} (metadata: $m); pruned roots:$states" >>"$WORK/prefixes.out"
}
check_prefix() { # check_prefix IMG PHASE
	local img=$1 phase=$2
	FK=()
	lo_attach "$img"
	if ! lo_mount rw 2>>"$WORK/prefixes.out"; then
		fail_kind unmountable "the prefix does not mount"
		lo_detach
		return
	fi
	load_subvols
	check_state found "$phase"
	forget_subvols
	umount_image
	if ! host_tabula rollback >"$WORK/next-rollback.out" 2>&1; then
		fail_kind rollback-failed "$(tail -3 "$WORK/next-rollback.out" | tr '\n' ' ')"
	elif ! lo_mount ro 2>>"$WORK/prefixes.out"; then
		fail_kind unmountable-after-rollback "no mount after the rollback"
	else
		load_subvols
		check_state next "$phase"
		local r=$MNT/root
		if ! sv_is "$r" || sv_ro "$r"; then
			fail_kind next:no-writable-root "root is missing or read-only"
		elif [[ $(subvol_field "$r" "Parent UUID") != "$blank_uuid" && $LIVE_WHERE != root ]]; then
			fail_kind next:root-not-fresh "root is neither a snapshot of the blank nor the old root"
		fi
		[[ -e $MNT/root.tabula-new ]] && fail_kind next:staging-left "root.tabula-new is still there"
		forget_subvols
		umount_image
		[[ $phase == prune ]] && resume_prune
	fi
	lo_detach
}
# A prune cut short is safe to resume: the next prune finishes it, and only the roots it had to delete
# are gone (subvolume and metadata).
resume_prune() {
	local r
	if ! host_tabula roots prune >"$WORK/next-prune.out" 2>&1; then
		fail_kind resume:prune-failed "$(tail -3 "$WORK/next-prune.out" | tr '\n' ' ')"
		return
	fi
	lo_mount ro 2>>"$WORK/prefixes.out" || {
		fail_kind resume:unmountable "no mount after the prune"
		return
	}
	load_subvols
	for r in "${!to_delete[@]}"; do
		[[ -e $MNT/old_roots/$r || -e $MNT/old_roots/$r.json ]] && fail_kind resume:not-finished "$r is still there"
	done
	check_state resume prune
	forget_subvols
	umount_image
}

seed=${VMT_CRASH_SEED:-$(((RANDOM << 15) ^ RANDOM))}
vlog "prefix sample seed $seed (replay this sample with VMT_CRASH_SEED=$seed)"
echo "seed $seed" >"$WORK/seed"
mapfile -t points < <("$LWR" points "$LOGDEV" "$seed" "${VMT_CRASH_MAX:-120}" "${VMT_CRASH_RANDOM:-40}")
must "prefixes chosen (${#points[@]})" test "${#points[@]}" -gt 2
cp --sparse=always "$SCRATCH/start.img" "$SCRATCH/work.img"
mkdir -p "$WORK/failed"
cur=0 checked=0 failed=0 nrb=0 nprune=0 kept=0
declare -A tally
: >"$WORK/prefixes.out"
t0=$EPOCHREALTIME
for line in "${points[@]}"; do
	read -r n kind mark <<<"$line"
	"$LWR" replay "$LOGDEV" "$SCRATCH/work.img" "$cur" "$n" || die "replay $cur..$n failed"
	cur=$n
	case $mark in prune-* | dm-log-writes-end) phase=prune nprune=$((nprune + 1)) ;; *) phase=rollback nrb=$((nrb + 1)) ;; esac
	echo "prefix $n ($kind, after mark $mark, $phase)" >>"$WORK/prefixes.out"
	cp --sparse=always "$SCRATCH/work.img" "$SCRATCH/prefix.img"
	check_prefix "$SCRATCH/prefix.img" "$phase"
	checked=$((checked + 1))
	if [[ ${#FK[@]} -gt 0 ]]; then
		failed=$((failed + 1))
		for k in "${FK[@]}"; do tally[$k]=$((${tally[$k]:-0} + 1)); done
		vlog "prefix $n ($kind, $phase) FAILED: ${FK[*]}"
		cp "$WORK/next-rollback.out" "$WORK/failed/prefix-$n.rollback.out"
		[[ $phase == prune ]] && cp "$WORK/next-prune.out" "$WORK/failed/prefix-$n.prune.out" 2>/dev/null
		if [[ $kept -lt 5 ]]; then # the first five failing images (sparse) are kept
			cp --sparse=always "$SCRATCH/prefix.img" "$WORK/failed/prefix-$n.img"
			kept=$((kept + 1))
		fi
	fi
	rm -f "$SCRATCH/prefix.img"
done
dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
[[ $failed -gt 0 ]] && cp --sparse=always "$LOGDEV" "$WORK/failed/log.img"
rm -f "$SCRATCH/work.img" "$SCRATCH/start.img"
{
	echo "seed $seed: $checked write prefixes checked ($nrb of the rollback, $nprune of the prune) in ${dt}s, $failed failed"
	for k in "${!tally[@]}"; do echo "  $k: ${tally[$k]}"; done | LC_ALL=C sort
} | tee "$WORK/tally" | while read -r l; do vlog "$l"; done
check "$checked write prefixes of rollback and prune: none fails (seed $seed; see tally, prefixes.out)" test "$failed" = 0
