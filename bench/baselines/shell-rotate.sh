#!/usr/bin/env bash
# Baseline: the rotation of the widely copied "erase your darlings" initrd shell script, in our words.
# The top level is mounted at $1 already (tabula's time includes its own mount; this favours the script).
# Move the root into the old-roots directory under a timestamp, prune old roots older than 30 days
# (found by mtime, deleted by `btrfs subvolume list -o` recursion, see shell-delete.sh), then create a
# fresh, empty root subvolume. Deviation: the timestamp has nanoseconds, so rounds in one second do not
# collide (the original uses seconds and would move the root *into* the earlier one).
set -eu
top=$1 root=$2 old=$3
mkdir -p "$top/$old"
if [ -e "$top/$root" ]; then
  mv "$top/$root" "$top/$old/$(date -u +%Y-%m-%d_%H%M%S.%N)"
fi
find "$top/$old" -mindepth 1 -maxdepth 1 -mtime +30 -print0 | while IFS= read -r -d '' r; do
  bash "$(dirname "$0")/shell-delete.sh" "$top" "${r#"$top"/}"
done
btrfs -q subvolume create "$top/$root"
