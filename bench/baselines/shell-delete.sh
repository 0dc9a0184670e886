#!/usr/bin/env bash
# Baseline: the shell script's recursive delete, in our words. $1: the mounted top level, $2: a path
# below it. Children are found with `btrfs subvolume list -o` (every subvolume *below the path's
# subvolume*, by path: the reason tabula does not do it this way), deleted depth first, then the path.
# When $2 is a plain directory, each subvolume in it is deleted this way, then the directory.
set -eu
top=$1 rel=$2
del() {
  local p=$1 child
  while IFS= read -r child; do
    [ -n "$child" ] && del "$top/$child"
  done < <(btrfs subvolume list -o "$p" | cut -d ' ' -f 9-)
  btrfs -q subvolume delete "$p" >/dev/null
}
if btrfs subvolume show "$top/$rel" >/dev/null 2>&1; then
  del "$top/$rel"
else
  for s in "$top/$rel"/*; do del "$s"; done
  rmdir "$top/$rel"
fi
