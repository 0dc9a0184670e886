#!/bin/sh
# dracut pre-pivot hook (shell initrd): bind the allowlist into the new root at $NEWROOT. Never stops
# the boot; tabula logs what failed.
tabula persist --root "${NEWROOT:-/sysroot}" || warn "tabula persist reported failures; booting on"
