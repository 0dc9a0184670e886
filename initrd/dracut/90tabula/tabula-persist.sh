#!/bin/sh
# dracut pre-pivot hook (shell initrd): bind the allowlist into the new root at $NEWROOT.
# shellcheck source=/dev/null
. /usr/lib/tabula/tabula-initrd.sh
tabula_persist "${NEWROOT:-/sysroot}" || :
