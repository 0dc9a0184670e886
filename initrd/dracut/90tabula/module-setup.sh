#!/bin/bash
# 90tabula: dracut module for tabula. With dracut's systemd initrd it installs tabula-rollback.service,
# tabula-persist.service and tabula-generator (a link to the binary); with the shell initrd, a
# pre-mount hook (rollback) and a pre-pivot hook (persist). Either way the initrd gets the static binary
# and the config; the binary does all the work (no shell reads the config).

# The support files: next to this script if copied there, else where `make install` puts them.
tabula_src() {
    local d
    for d in "$moddir" /usr/lib/tabula /usr/lib/tabula/units; do
        if [[ -e "$d/$1" ]]; then
            echo "$d/$1"
            return 0
        fi
    done
    derror "tabula: '$1' not found (run 'make install' from tabula's source tree)"
    return 1
}

check() {
    require_binaries tabula || return 1
    # Included whenever tabula is installed and configured, hostonly or not.
    [[ -r ${TABULA_CONFIG:-/etc/tabula/tabula.toml} ]] || return 255
    return 0
}

depends() {
    echo btrfs
    return 0
}

install() {
    local bin conf
    bin=$(command -v tabula) || return 1
    conf=${TABULA_CONFIG:-/etc/tabula/tabula.toml}
    # A static binary: nothing else to pull in.
    inst_simple "$bin" /usr/bin/tabula
    inst_simple "$conf" /etc/tabula/tabula.toml

    if dracut_module_included "systemd"; then
        inst_simple "$(tabula_src tabula-rollback.service)" "$systemdsystemunitdir/tabula-rollback.service"
        inst_simple "$(tabula_src tabula-persist.service)" "$systemdsystemunitdir/tabula-persist.service"
        # The generator is the binary itself, dispatched on its name.
        ln_r /usr/bin/tabula "$systemdutildir/system-generators/tabula-generator"
        $SYSTEMCTL -q --root "$initdir" enable tabula-rollback.service tabula-persist.service
    else
        # pre-mount runs after the root device is found, cryptsetup/LVM and resume (10-resume).
        inst_hook pre-mount 90 "$(tabula_src tabula-rollback.sh)"
        # pre-pivot 60: after usrmount's 50 (it mounts /usr and the x-initrd.mount entries of the new
        # root's fstab), so those never land on top of a bind.
        inst_hook pre-pivot 60 "$(tabula_src tabula-persist.sh)"
    fi
}
