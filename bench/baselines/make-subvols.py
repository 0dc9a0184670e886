#!/usr/bin/python3
"""Fixture: a subvolume at argv[1] holding argv[2] nested subvolumes (n1, n2, …)."""
import os
import sys

import btrfsutil

btrfsutil.create_subvolume(sys.argv[1])
for i in range(int(sys.argv[2])):
    btrfsutil.create_subvolume(os.path.join(sys.argv[1], f"n{i + 1}"))
