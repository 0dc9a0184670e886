#!/usr/bin/python3
"""Baseline: the C library's recursive delete (python3-btrfsutil, Debian's binding of libbtrfsutil).

Deletes every subvolume in the directory argv[1] with btrfsutil.delete_subvolume(recursive=True), then
one filesystem sync (the single commit tabula's prune is allowed), then removes the directory.
"""
import os
import sys

import btrfsutil

top = sys.argv[1]
for name in sorted(os.listdir(top)):
    btrfsutil.delete_subvolume(os.path.join(top, name), recursive=True)
btrfsutil.sync(top)
os.rmdir(top)
