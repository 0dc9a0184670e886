#!/usr/bin/python3
"""Fixture: argv[2] changes (a boot's worth) spread over the tree make-tree.py made at argv[1]:
40% new files, 20% deletions, 20% rewrites, 10% chmod, 10% renames."""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
files = []
for d, _, names in os.walk(root):
    files += [os.path.join(d, x) for x in names[:20]]
    if len(files) > 4 * n:
        break
os.makedirs(os.path.join(root, "var/log"), exist_ok=True)
for i in range(n):
    kind, f = i % 10, files[i]
    if kind < 4:
        open(os.path.join(root, "var/log", f"new{i}.log"), "w").write("boot\n")
    elif kind < 6:
        os.unlink(f)
    elif kind < 8:
        open(f, "a").write("changed\n")
    elif kind < 9:
        os.chmod(f, 0o600)
    else:
        os.rename(f, f + ".moved")
