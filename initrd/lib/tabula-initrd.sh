# shellcheck shell=sh
# tabula-initrd.sh: the shell glue every non-NixOS initrd family shares (busybox /init,
# initramfs-tools, mkinitcpio, dracut). Installed as /usr/lib/tabula/tabula-initrd.sh.
#
# Source it and call the functions, or run it: `sh tabula-initrd.sh rollback|persist ROOT|prepare ROOT|finish ROOT`.
# All the real work is `tabula` itself; this file only finds the binary, loads the btrfs module,
# mounts the persistent subvolume next to the new root and decides what a failure means for the boot.
# POSIX sh only (busybox ash, dash, bash), no bashisms.

: "${TABULA_BIN:=}"
: "${TABULA_CONFIG:=/etc/tabula/tabula.toml}"
export TABULA_CONFIG

# Prints a line to the kernel log (visible in the initrd and in `journalctl -b` later) and stderr.
tabula_log() {
	echo "tabula-initrd: $*" >&2
	if [ -w /dev/kmsg ]; then echo "tabula-initrd: $*" >/dev/kmsg 2>/dev/null || :; fi
}

# Finds the tabula binary.
tabula_bin() {
	if [ -n "$TABULA_BIN" ]; then echo "$TABULA_BIN"; return 0; fi
	for b in /usr/bin/tabula /bin/tabula /sbin/tabula /usr/sbin/tabula; do
		if [ -x "$b" ]; then echo "$b"; return 0; fi
	done
	command -v tabula 2>/dev/null
}

# tabula_conf_get SECTION KEY DEFAULT: the string value of `KEY = "…"` in `[SECTION]` of the config,
# or DEFAULT. Only plain one-line string values are read (all the keys the glue needs are such);
# tabula itself parses and validates the full file. Pure sh: some initrds have no awk or sed.
tabula_conf_get() {
	_sec='' _val=''
	if [ -r "$TABULA_CONFIG" ]; then
		while IFS= read -r _line || [ -n "$_line" ]; do
			# Strip leading blanks.
			_line=${_line#"${_line%%[![:space:]]*}"}
			case "$_line" in
			\[*)
				_sec=${_line%%]*}]
				case "$_line" in \[\[*) _sec="$_sec]" ;; esac
				;;
			"$2"[[:space:]=]* | \""$2"\"[[:space:]=]*)
				[ "$_sec" = "[$1]" ] || continue
				_rest=${_line#*=}
				_rest=${_rest#"${_rest%%[![:space:]]*}"}
				case "$_rest" in \"*) ;; *) continue ;; esac
				_rest=${_rest#\"}
				_val=${_rest%%\"*}
				break
				;;
			esac
		done <"$TABULA_CONFIG"
	fi
	if [ -n "$_val" ]; then echo "$_val"; else echo "$3"; fi
}

# tabula_mount_source MOUNTPOINT: the device mounted (last) at MOUNTPOINT, from /proc/mounts.
tabula_mount_source() {
	_src=
	while read -r _d _m _rest; do
		[ "$_m" = "$1" ] && _src=$_d
	done </proc/mounts
	[ -n "$_src" ] && echo "$_src"
}

# tabula_rollback: retire the old root, make a fresh one. Must run after the root device (and any
# LUKS/LVM layer under it) exists and after hibernation resume, before the root is mounted.
# Returns tabula's status: 0 means "go on mounting the root" (including when tabula applied
# on_failure = "continue" and left the old root in place); non-zero means on_failure = "emergency"
# (or a broken install) and the caller must stop in its emergency shell.
tabula_rollback() {
	_bin=$(tabula_bin) || _bin=
	if [ -z "$_bin" ]; then
		tabula_log "tabula binary not found in the initrd: rollback NOT done"
		return 1
	fi
	# tabula needs the btrfs driver; on most distribution kernels it is a module.
	modprobe btrfs 2>/dev/null || :
	# tabula reads tabula.skip / tabula.boot= / tabula.debug from /proc/cmdline itself.
	"$_bin" rollback
	_rc=$?
	if [ "$_rc" -ne 0 ]; then tabula_log "tabula rollback failed (exit $_rc)"; fi
	return "$_rc"
}

# tabula_mount_persist ROOT: mount the persistent subvolume (layout.persist) of the filesystem that
# holds ROOT at ROOT/<persist.path>, unless something is mounted there already (fstab x-initrd.mount,
# NixOS neededForBoot). The root and the persistent subvolume live in the same btrfs top level, so
# the device is the one ROOT is mounted from: nothing to resolve.
tabula_mount_persist() {
	_root=${1%/}
	_sub=$(tabula_conf_get layout persist persist)
	_path=$(tabula_conf_get persist path /persist)
	_mnt="$_root$_path"
	if tabula_mount_source "$_mnt" >/dev/null; then
		return 0
	fi
	if ! _dev=$(tabula_mount_source "$_root"); then
		tabula_log "'$_root' is not mounted: cannot mount the persistent subvolume"
		return 1
	fi
	if [ ! -d "$_mnt" ] && ! mkdir -p "$_mnt"; then
		tabula_log "creating '$_mnt' failed"
		return 1
	fi
	if ! mount -t btrfs -o "subvol=/$_sub" "$_dev" "$_mnt"; then
		tabula_log "mounting subvolume '$_sub' of '$_dev' at '$_mnt' failed"
		return 1
	fi
}

# tabula_mounted_ro MOUNTPOINT: succeeds when MOUNTPOINT is mounted read-only.
tabula_mounted_ro() {
	_ro=1
	while read -r _d _m _t _o _rest; do
		if [ "$_m" = "$1" ]; then
			case ",$_o," in *,ro,*) _ro=0 ;; *) _ro=1 ;; esac
		fi
	done </proc/mounts
	return "$_ro"
}

# tabula_persist_prepare ROOT: make ROOT writable for tabula persist (which may create mount targets)
# and mount the persistent subvolume. A root the command line mounted `ro` is remounted read-write and
# marked in /run so that tabula_persist_finish puts the read-only mount flag back.
tabula_persist_prepare() {
	_root=${1%/}
	if tabula_mounted_ro "$_root"; then
		if mount -o remount,rw "$_root"; then
			: >/run/tabula-root-was-ro
		else
			tabula_log "remounting '$_root' read-write failed: persistent paths may be missing"
		fi
	fi
	tabula_mount_persist "$_root"
}

# tabula_persist_finish ROOT: give ROOT back the read-only flag it had. Only the mount flag
# (remount,bind,ro): the filesystem stays writable under the persistent bind mounts.
tabula_persist_finish() {
	if [ -e /run/tabula-root-was-ro ]; then
		mount -o remount,bind,ro "${1%/}" || tabula_log "remounting '${1%/}' read-only failed"
		rm -f /run/tabula-root-was-ro
	fi
	return 0
}

# tabula_persist ROOT: bind the allowlist into the new root mounted at ROOT. Never stops the boot:
# a missing persistent path is logged loudly, the machine still comes up.
tabula_persist() {
	_root=${1%/}
	_bin=$(tabula_bin) || _bin=
	if [ -z "$_bin" ]; then
		tabula_log "tabula binary not found in the initrd: persistent paths NOT mounted"
		return 1
	fi
	if ! tabula_persist_prepare "$_root"; then
		tabula_persist_finish "$_root"
		return 1
	fi
	"$_bin" persist --root "$_root"
	_rc=$?
	if [ "$_rc" -ne 0 ]; then tabula_log "tabula persist reported failures (exit $_rc); booting on"; fi
	tabula_persist_finish "$_root"
	return "$_rc"
}

# Run as a command (from systemd units) rather than sourced.
case "${0##*/}" in
tabula-initrd.sh | tabula-initrd)
	case "${1:-}" in
	rollback) tabula_rollback ;;
	persist) tabula_persist "${2:?usage: tabula-initrd.sh persist ROOT}" ;;
	prepare) tabula_persist_prepare "${2:?usage: tabula-initrd.sh prepare ROOT}" ;;
	finish) tabula_persist_finish "${2:?usage: tabula-initrd.sh finish ROOT}" ;;
	*)
		echo "usage: tabula-initrd.sh rollback | persist ROOT | prepare ROOT | finish ROOT" >&2
		exit 2
		;;
	esac
	;;
esac
