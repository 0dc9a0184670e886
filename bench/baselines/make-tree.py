#!/usr/bin/python3
"""Fixture: argv[2] small files under argv[1], 1000 per directory, two directory levels."""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"usr{i // 100000}", f"d{i // 1000:04}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, f"f{i:07}"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x" * (i % 200))
    os.close(fd)
