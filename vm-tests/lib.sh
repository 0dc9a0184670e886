# shellcheck shell=bash
# shellcheck disable=SC2034 # variables used by the scripts that source this file
# vm-tests/lib.sh: the harness's building blocks, sourced by `run`, `demo` and every scenario.
#
# Facts this relies on (measured, see shared/research/vm-tests-feasibility.md): qemu TCG only (KVM hangs
# here), Debian's cloud kernel fetched with `apt-get download` (never installed), btrfs and virtio as
# modules loaded by the initramfs, results checked on the host by loop-mounting the image after qemu exits.

set -o pipefail

VMT_DIR=${VMT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO=$(cd "$VMT_DIR/.." && pwd)
CACHE=${VMT_CACHE:-$VMT_DIR/.cache}
OUT=${VMT_OUT:-$VMT_DIR/out}
INITRD_SRC=$REPO/initrd
# Per-boot limits: a hung guest costs this much, never more.
BOOT_TIMEOUT=${VMT_BOOT_TIMEOUT:-150}
SD_BOOT_TIMEOUT=${VMT_SD_BOOT_TIMEOUT:-300}

# Progress lines go to fd 3 when the scenario runner opened it (so that they land in scenario.log even
# from inside `check`, whose output goes to checks.out), else to stderr.
vlog() {
	if { true >&3; } 2>/dev/null; then
		printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${SCENARIO:-vm-tests}" "$*" >&3
	else
		printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${SCENARIO:-vm-tests}" "$*" >&2
	fi
}
die() {
	vlog "FATAL: $*"
	exit 1
}

# ---------------------------------------------------------------------------------------------------
# Kernel: resolve the cloud kernel's ABI name now (point releases bump it), download the .deb once,
# unpack, depmod. Sets KVER, KROOT, VMLINUZ.
fetch_kernel() {
	local pkg dir
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [[ -z $pkg ]]; then
		vlog "apt-cache knows no linux-image-cloud-amd64: running apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
		pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[[ -n $pkg ]] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
	KVER=${pkg#linux-image-}
	dir=$CACHE/kernel/$KVER
	KROOT=$dir/root
	VMLINUZ=$KROOT/boot/vmlinuz-$KVER
	if [[ ! -e $dir/.done ]]; then
		vlog "fetching $pkg"
		rm -rf "$dir" && mkdir -p "$dir/deb"
		chown _apt "$dir/deb" 2>/dev/null || :
		(cd "$dir/deb" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
		dpkg-deb -x "$dir"/deb/*.deb "$KROOT" || die "unpacking $pkg failed"
		depmod -b "$KROOT" "$KVER" || die "depmod failed"
		rm -rf "$dir/deb"
		touch "$dir/.done"
	fi
	export KVER KROOT VMLINUZ
}

# ---------------------------------------------------------------------------------------------------
# tabula binaries: static (the initrd holds nothing else). TABULA_BIN / TABULA_FAULT_BIN override.
build_tabula() {
	local target=x86_64-unknown-linux-gnu
	if [[ -z ${TABULA_BIN:-} ]]; then
		vlog "building static tabula (cargo build --release)"
		(cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --target $target >&2) ||
			die "cargo build failed"
		TABULA_BIN=$REPO/target/$target/release/tabula
	fi
	[[ -x $TABULA_BIN ]] || die "no tabula binary at '$TABULA_BIN'"
	export TABULA_BIN
}

# The fault-injection build (TABULA_FAULT=<step> aborts there), in its own target dir so that it does
# not evict the release build.
build_tabula_fault() {
	local target=x86_64-unknown-linux-gnu
	if [[ -z ${TABULA_FAULT_BIN:-} ]]; then
		vlog "building static tabula with fault injection"
		(cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --target $target \
			--features fault-injection --target-dir "$REPO/target/fault" >&2) || die "cargo build (fault-injection) failed"
		TABULA_FAULT_BIN=$REPO/target/fault/$target/release/tabula
	fi
	[[ -x $TABULA_FAULT_BIN ]] || die "no fault-injection tabula at '$TABULA_FAULT_BIN'"
	export TABULA_FAULT_BIN
}

# ---------------------------------------------------------------------------------------------------
# Busybox initramfs = base cpio (busybox, kernel modules, cached per kernel) + a small cpio holding
# tabula's own initrd files, copied verbatim from initrd/: the busybox /init, plus the binary and the
# config. The kernel unpacks concatenated gzip'ed cpio archives in order.
busybox_base_cpio() {
	local out=$CACHE/initrd-base-$KVER.cpio.gz tmp mods m
	if [[ ! -s $out ]]; then
		vlog "building the base initramfs (busybox + modules)"
		tmp=$(mktemp -d "$CACHE/base.XXXXXX")
		mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,sysroot,lib/modules}
		cp /bin/busybox "$tmp/bin/busybox"
		for m in $("$tmp/bin/busybox" --list-full); do
			[[ -e $tmp/$m ]] || ln -s /bin/busybox "$tmp/$m"
		done
		# The insmod order with soft dependencies (crc32c before btrfs, …).
		mods=$(for m in btrfs virtio_pci virtio_blk; do modprobe -d "$KROOT" -S "$KVER" --show-depends "$m"; done |
			awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
		: >"$tmp/etc/initrd-modules"
		for m in $mods; do
			mkdir -p "$tmp/$(dirname "${m#"$KROOT"}")"
			cp "$m" "$tmp/${m#"$KROOT"}"
			echo "${m#"$KROOT"}" >>"$tmp/etc/initrd-modules"
		done
		printf 'NAME="busybox initrd (tabula vm-tests)"\nID=vmtest-initrd\n' >"$tmp/etc/initrd-release"
		(cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp" && mv "$out.tmp" "$out"
		rm -rf "$tmp"
	fi
	BASE_CPIO=$out
}

# make_initrd OUT CONFIG [BIN]: the busybox initramfs for one scenario.
make_initrd() {
	local out=$1 conf=$2 bin=${3:-$TABULA_BIN} tmp
	busybox_base_cpio
	tmp=$(mktemp -d)
	install -D -m 0755 "$INITRD_SRC/busybox/init" "$tmp/init"
	install -D -m 0755 "$bin" "$tmp/usr/bin/tabula"
	install -D -m 0644 "$conf" "$tmp/etc/tabula/tabula.toml"
	{
		cat "$BASE_CPIO"
		(cd "$tmp" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1)
	} >"$out"
	rm -rf "$tmp"
}

# ---------------------------------------------------------------------------------------------------
# Images. Everything mounted here happens inside the scenario's private mount namespace (run_scenario
# starts each scenario under `unshare -m`), with `mount -o loop`, whose loop device detaches itself on
# umount; mount_image/umount_image always pair up, and the namespace's end is the last safety net.

MNT=
mount_image() { # mount_image IMG [rw]: top level (subvolid=5) at $MNT
	local img=$1 mode=${2:-ro}
	MNT=${WORK:?}/mnt
	mkdir -p "$MNT"
	mount -o "loop,$mode,subvolid=5" "$img" "$MNT" || die "mounting '$img'"
}
umount_image() {
	if [[ -n $MNT ]] && mountpoint -q "$MNT"; then umount "$MNT" || die "unmounting '$MNT'"; fi
}

# The guest's /sbin/init inside the image: run the boot's script from the second disk, then power off.
guest_init() {
	cat <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "VMTEST: guest up"
mkdir -p /tmp/vmtest
if [ -b /dev/vdb ] && tar -xf /dev/vdb -C /tmp/vmtest 2>/dev/null; then
	cd /tmp/vmtest && . ./guestlib.sh && . ./boot.sh
	cd /
fi
sync
echo "VMTEST: poweroff"
poweroff -f
EOF
}

# make_image IMG CONFIG [SIZE]: a btrfs image with tabula's layout. `root` holds a busybox root with
# tabula and the config (so `tabula roots …` works inside the guest), `root-blank` is its read-only
# snapshot, `persist` and `old_roots` are empty subvolumes.
make_image() {
	local img=$1 conf=$2 size=${3:-384M} r
	rm -f "$img"
	truncate -s "$size" "$img"
	mkfs.btrfs -q -f "$img" >/dev/null || die "mkfs.btrfs '$img'"
	mount_image "$img" rw
	btrfs -q subvolume create "$MNT/root" >/dev/null
	r=$MNT/root
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc/tabula,proc,sys,dev,tmp,run,persist,var/lib,home,root,mnt}
	cp /bin/busybox "$r/bin/busybox"
	for m in $("$r/bin/busybox" --list-full); do
		[[ -e $r/$m ]] || ln -s /bin/busybox "$r/$m"
	done
	guest_init >"$r/sbin/init.vmtest"
	chmod 0755 "$r/sbin/init.vmtest"
	rm -f "$r/sbin/init" && ln -s init.vmtest "$r/sbin/init"
	install -m 0755 "$TABULA_BIN" "$r/usr/bin/tabula"
	install -m 0644 "$conf" "$r/etc/tabula/tabula.toml"
	printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n' >"$r/etc/passwd"
	printf 'root:x:0:\nalice:x:1000:\n' >"$r/etc/group"
	echo "blank" >"$r/etc/vmtest-blank"
	mkdir -p "$r/home/alice" && chown 1000:1000 "$r/home/alice"
	btrfs -q subvolume snapshot -r "$r" "$MNT/root-blank" >/dev/null
	btrfs -q subvolume create "$MNT/persist" >/dev/null
	btrfs -q subvolume create "$MNT/old_roots" >/dev/null
	umount_image
}

# ---------------------------------------------------------------------------------------------------
# Added to every boot's command line, whatever the scenario's base: the kernel's crypto self-tests
# prove nothing here and, under TCG on a busy host, were seen stuck for minutes (soft lockups in
# cryptomgr_test) before init ever ran.
HARNESS_APPEND="cryptomgr.notests=1"

# Booting. vm_boot NAME [--append ARGS] [--rtc BASE] [--initrd IMG] [--img IMG] [--kill-at REGEX]
#   [--kill-delay SEC] [--timeout SEC] [--smp N] [--kernel K] [--disk IMG]…
# --disk: a further virtio disk, after the script disk (the first is /dev/vdc).
# The boot's guest script is $WORK/NAME.sh (run by the guest's init, with guestlib.sh), shipped on a
# read-only second disk (a tar). The serial console goes to $WORK/NAME.log. --kill-at: kill -9 qemu
# (a power cut, no flush) --kill-delay seconds after REGEX first appears in the serial log.
# Returns qemu's status (137 when killed on purpose).
vm_boot() {
	local name=$1 append="" rtc="" initrd=${INITRD:-} img=${IMG:-} kill_at="" kill_delay=0 timeout=$BOOT_TIMEOUT
	local smp=1 kernel=${VMLINUZ:?} base_append="console=ttyS0 panic=-1 loglevel=7 rd.emergency=poweroff root=/dev/vda rootfstype=btrfs rootflags=subvol=root rw"
	local -a disks=()
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
		--append) append="$append $2" ;;
		--rtc) rtc=$2 ;;
		--initrd) initrd=$2 ;;
		--img) img=$2 ;;
		--kill-at) kill_at=$2 ;;
		--kill-delay) kill_delay=$2 ;;
		--timeout) timeout=$2 ;;
		--smp) smp=$2 ;;
		--kernel) kernel=$2 ;;
		--base-append) base_append=$2 ;;
		--disk) disks+=(-drive "file=$2,format=raw,if=virtio,cache=writeback") ;;
		*) die "vm_boot: unknown option $1" ;;
		esac
		shift 2
	done
	[[ ${VMT_DROP_APPEND:-0} == 1 ]] && append=""
	[[ -n ${VMT_EXTRA_APPEND:-} ]] && append="$append $VMT_EXTRA_APPEND"
	local log=$WORK/$name.log tar=$WORK/$name.tar sd
	sd=$(mktemp -d)
	cp "$VMT_DIR/guestlib.sh" "$sd/guestlib.sh"
	if [[ -f $WORK/$name.sh ]]; then cp "$WORK/$name.sh" "$sd/boot.sh"; else echo ":" >"$sd/boot.sh"; fi
	tar -cf "$tar" -C "$sd" . && rm -rf "$sd"
	local -a cmd=(qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 1024 -smp "$smp"
		-nodefaults -no-user-config -display none -no-reboot -serial "file:$log"
		-kernel "$kernel" -initrd "$initrd" -append "$base_append $HARNESS_APPEND$append"
		-drive "file=$img,format=raw,if=virtio,cache=writeback"
		-drive "file=$tar,format=raw,if=virtio,readonly=on" "${disks[@]}")
	[[ -n $rtc ]] && cmd+=(-rtc "base=$rtc")
	vlog "boot $name${append:+ (append:$append)}${rtc:+ (rtc $rtc)}${kill_at:+ (power cut ${kill_delay}s after /$kill_at/)}"
	local t0=$EPOCHREALTIME rc
	: >"$log"
	if [[ -z $kill_at ]]; then
		timeout -k 5 "$timeout" "${cmd[@]}" </dev/null >"$WORK/$name.qemu.err" 2>&1
		rc=$?
	else
		"${cmd[@]}" </dev/null >"$WORK/$name.qemu.err" 2>&1 &
		local pid=$! waited=0
		while kill -0 "$pid" 2>/dev/null; do
			# grep reads all of it (no -q): an early exit would SIGPIPE tr and, with pipefail, hide the match.
			if tr -d '\r' <"$log" | grep -E -- "$kill_at" >/dev/null; then
				[[ $kill_delay != 0 ]] && sleep "$kill_delay"
				kill -9 "$pid" 2>/dev/null
				break
			fi
			sleep 0.05
			waited=$((waited + 1))
			if [[ $waited -gt $((timeout * 20)) ]]; then kill -9 "$pid" 2>/dev/null; break; fi
		done
		wait "$pid"
		rc=$?
	fi
	local dt
	dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	echo "$name $dt" >>"$WORK/timings"
	vlog "boot $name: exit $rc after ${dt}s"
	return "$rc"
}

# serial LOG: the serial log without carriage returns. Never pipe it into `grep -q`: grep's early exit
# SIGPIPEs tr and, under pipefail, turns a match into a failure.
serial() { tr -d '\r' <"$WORK/$1.log"; }

# section BOOT NAME: the output of guest step NAME (between the markers written by guestlib's `step`).
section() {
	serial "$1" | awk -v n="$2" '$0 == "VMTEST-BEGIN " n { on = 1; next } index($0, "VMTEST-END " n " ") == 1 { on = 0 } on'
}
# step_rc BOOT NAME: exit status of guest step NAME ("" when it never finished).
step_rc() {
	serial "$1" | awk -v n="$2" 'index($0, "VMTEST-END " n " rc=") == 1 { sub(/.*rc=/, ""); print; exit }'
}

# ---------------------------------------------------------------------------------------------------
# Checks: each one is recorded; the scenario fails if any did.
FAILED=0 NFAIL=0
check() { # check DESCRIPTION COMMAND...
	local desc=$1
	shift
	if "$@" >>"$WORK/checks.out" 2>&1; then
		echo "ok   $desc" >>"$WORK/checks"
	else
		echo "FAIL $desc" >>"$WORK/checks"
		vlog "FAIL: $desc"
		FAILED=1 NFAIL=$((NFAIL + 1))
	fi
}
# must: like check, but stops the scenario when this check fails (later steps would only be noise).
must() {
	local before=$NFAIL
	check "$@"
	[[ $NFAIL == "$before" ]] || exit 1
}

# Host-side inspection helpers (run between mount_image and umount_image).
subvols_in() { # names of the entries directly under $MNT/$1, sorted
	find "$MNT/$1" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}
old_roots() { # retired roots (directories only: metadata files are skipped)
	find "$MNT/old_roots" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}
count_is() { # count_is EXPECTED VALUE...
	local want=$1
	shift
	[[ $# -eq $want ]] || {
		echo "expected $want, got $#: $*"
		return 1
	}
}
is_ro_subvol() { [[ $(btrfs property get -ts "$1" ro 2>/dev/null) == "ro=true" ]]; }
is_subvol() { [[ $(stat -f -c %T "$1" 2>/dev/null) == btrfs ]] && [[ $(stat -c %i "$1") == 256 ]]; }
file_has() { # file_has FILE TEXT
	grep -qF -- "$2" "$1" || {
		echo "'$1' lacks '$2'"
		return 1
	}
}
serial_has() { # serial_has BOOT REGEX
	serial "$1" | grep -E -- "$2" >/dev/null || {
		echo "serial log of $1 lacks /$2/"
		return 1
	}
}
serial_lacks() { ! serial "$1" | grep -E -- "$2" >/dev/null; }
# The whole layout is there: root, blank (read-only), persist, old_roots.
layout_whole() {
	is_subvol "$MNT/root" && is_subvol "$MNT/root-blank" && is_ro_subvol "$MNT/root-blank" &&
		is_subvol "$MNT/persist" && is_subvol "$MNT/old_roots" && [[ -x $MNT/root/sbin/init ]]
}

# ---------------------------------------------------------------------------------------------------
# Debian roots for the distribution generators (dracut, initramfs-tools): debootstrap once per flavour,
# cached under .cache (a fresh CI machine builds them, ~1 min each). The mirror is the one apt uses here.
apt_mirror() {
	local m=""
	[[ -r /etc/apt/sources.list.d/debian.sources ]] &&
		m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
	[[ -z $m && -r /etc/apt/sources.list ]] &&
		m=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
	echo "${m:-http://deb.debian.org/debian}"
}

# debian_rootfs FLAVOUR: prints the cached rootfs directory for FLAVOUR (dracut | initramfs-tools).
debian_rootfs() {
	local flavour=$1 dir=$CACHE/rootfs-$1 include
	case $flavour in
	dracut) include=systemd,systemd-sysv,udev,dracut-core,btrfs-progs,kmod ;;
	initramfs-tools) include=initramfs-tools,busybox,zstd,btrfs-progs,kmod,udev ;;
	*) die "debian_rootfs: unknown flavour $flavour" ;;
	esac
	command -v debootstrap >/dev/null || die "missing debootstrap (apt-get install debootstrap)"
	(
		flock 9
		if [[ ! -e $dir/.done ]]; then
			vlog "debootstrap bookworm ($flavour) from $(apt_mirror)"
			rm -rf "$dir.tmp"
			debootstrap --variant=minbase --include="$include" bookworm "$dir.tmp" "$(apt_mirror)" >"$CACHE/debootstrap-$flavour.log" 2>&1 ||
				{ tail -20 "$CACHE/debootstrap-$flavour.log" >&2; exit 1; }
			rm -rf "$dir.tmp"/var/cache/apt/archives/*.deb
			rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.done"
		fi
	) 9>"$CACHE/rootfs-$flavour.lock" || die "debootstrap ($flavour) failed: see $CACHE/debootstrap-$flavour.log"
	echo "$dir"
}

# in_chroot DIR CMD…: run CMD in DIR with /proc, /sys and /dev bound in (unmounted afterwards).
in_chroot() {
	local dir=$1 d rc
	shift
	for d in proc sys dev; do mount --bind "/$d" "$dir/$d"; done
	chroot "$dir" "$@"
	rc=$?
	for d in dev sys proc; do umount -l "$dir/$d"; done
	return "$rc"
}

# install_tabula_into ROOTFS CONFIG FAMILY…: tabula installed the way a user would (`make install` plus
# the family targets), from this source tree, with the kernel's modules for the generator to use.
install_tabula_into() {
	local rootfs=$1 conf=$2 t
	shift 2
	local -a targets=(install)
	for t; do targets+=("install-$t"); done
	make -s -C "$REPO" "${targets[@]}" DESTDIR="$rootfs" TABULA_BIN="$TABULA_BIN" >&2 || die "make install into '$rootfs'"
	install -D -m 0644 "$conf" "$rootfs/etc/tabula/tabula.toml"
	mkdir -p "$rootfs/lib/modules"
	cp -a "$KROOT/lib/modules/$KVER" "$rootfs/lib/modules/" || die "copying modules"
	# initramfs-tools reads the kernel's config to pick a compressor.
	install -D -m 0644 "$KROOT/boot/config-$KVER" "$rootfs/boot/config-$KVER"
}

# Breaking on purpose (vm-tests/BROKEN-ON-PURPOSE.md): VMT_CONFIG_SED, a sed script applied to every
# scenario's config; VMT_EXTRA_APPEND, words added to every boot's kernel command line;
# VMT_DROP_APPEND=1, every boot loses its scenario-specific command line words.
patch_config() {
	if [[ -n ${VMT_CONFIG_SED:-} ]]; then
		sed -i -e "$VMT_CONFIG_SED" "$1" || die "VMT_CONFIG_SED failed"
		vlog "config patched on purpose with '$VMT_CONFIG_SED'"
	fi
}

# busybox_setup [BIN]: config from stdin → $WORK/tabula.toml, then the initrd ($INITRD) and a fresh
# image ($IMG) with the layout.
busybox_setup() {
	conf=$WORK/tabula.toml
	cat >"$conf"
	patch_config "$conf"
	IMG=$WORK/disk.img INITRD=$WORK/initrd.img
	make_initrd "$INITRD" "$conf" "${1:-$TABULA_BIN}"
	make_image "$IMG" "$conf"
}
# guest_script BOOT: the guest script for BOOT from stdin.
guest_script() { cat >"$WORK/$1.sh"; }
# newest_of NAME…: the last of the names ("none" when there are none), safe under `set -u`.
newest_of() {
	if [[ $# -gt 0 ]]; then echo "${!#}"; else echo none; fi
}

# guest_service ROOT NAME DESCRIPTION AFTER [UNIT…]: a oneshot unit in the chroot ROOT that runs
# /usr/local/sbin/NAME once AFTER is reached, its output on the serial console; enabled with the UNITs.
guest_service() {
	local r=$1 name=$2 desc=$3 after=$4
	shift 4
	cat >"$r/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=$desc
After=$after
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/$name
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
UNIT
	in_chroot "$r" systemctl enable -q "$name.service" "$@" || die "systemctl enable"
}

# dracut_systemd_initrd ROOT: dracut's systemd initrd with the tabula module, built in the chroot ROOT
# (which has had `make install install-dracut`), becomes $INITRD.
dracut_systemd_initrd() {
	local r=$1
	vlog "running dracut in the chroot"
	in_chroot "$r" dracut -q --force --no-hostonly --kver "$KVER" --drivers "virtio_pci virtio_blk btrfs" \
		--modules "base fs-lib kernel-modules udev-rules rootfs-block systemd-initrd dracut-systemd btrfs tabula" \
		/tmp/initrd-dracut.img >"$WORK/dracut.log" 2>&1
	must "dracut builds an initrd with the tabula module" test -s "$r/tmp/initrd-dracut.img"
	mv "$r/tmp/initrd-dracut.img" "$INITRD"
}

# debian_image CONF [MKFS_OPTION…]: a fresh 2 GiB btrfs at $IMG, mounted at $MNT, whose `root` subvolume
# ($r, set here) holds the cached Debian 12 rootfs (debian_rootfs dracut) with `make install
# install-dracut` and CONF in it. The caller adds its own files, the blank and the other subvolumes.
debian_image() {
	local conf=$1 rootfs
	shift
	rootfs=$(debian_rootfs dracut) || die "no debian rootfs"
	vlog "building the image (debian root + tabula + dracut initrd)"
	rm -f "$IMG"
	truncate -s 2G "$IMG"
	mkfs.btrfs -q -f "$@" "$IMG" >/dev/null
	mount_image "$IMG" rw
	btrfs -q subvolume create "$MNT/root" >/dev/null
	r=$MNT/root
	cp -a "$rootfs/." "$r/" || die "copying the debian root"
	rm -f "$r/.done"
	install_tabula_into "$r" "$conf" dracut
}
