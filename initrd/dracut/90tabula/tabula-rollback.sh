#!/bin/sh
# dracut pre-mount hook (shell initrd): roll the root back before it is mounted.
# shellcheck source=/dev/null
. /usr/lib/tabula/tabula-initrd.sh
if ! tabula_rollback; then
    emergency_shell -n tabula "tabula rollback failed and [boot] on_failure asks to stop"
fi
