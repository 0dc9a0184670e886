# shellcheck shell=sh
# guestlib.sh: sourced by the guest's init before the boot's script (busybox sh inside the VM).
# `step NAME CMD…` runs CMD and frames its output with markers the host parses from the serial log.
step() {
	_n=$1
	shift
	echo "VMTEST-BEGIN $_n"
	"$@" 2>&1
	_rc=$?
	echo "VMTEST-END $_n rc=$_rc"
	return 0
}
