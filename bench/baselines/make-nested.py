#!/usr/bin/python3
"""Fixture: argv[2] nested subvolumes (n1, n2, …) inside the existing subvolume argv[1]."""
import os
import sys

import btrfsutil

for i in range(int(sys.argv[2])):
    btrfsutil.create_subvolume(os.path.join(sys.argv[1], f"n{i + 1}"))
