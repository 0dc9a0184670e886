#!/bin/sh
# dracut pre-mount hook (shell initrd): roll the root back before it is mounted. tabula applies
# [boot] on_failure itself: non-zero means stop.
if ! tabula rollback; then
    emergency_shell -n tabula "tabula rollback failed and [boot] on_failure asks to stop"
fi
