#!/usr/bin/python3
"""The I/O workload run through a persisted path, its source and a bindfs mount: argv[2] small files
(4 KiB) created, fsynced once at the end, read back, stat'ed and deleted in directory argv[1], then
one 64 MiB file written, fdatasync'ed and read back. The same work in every variant: only the path
differs."""
import os
import sys

d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
block = b"x" * 4096
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, block)
    os.close(fd)
dfd = os.open(d, os.O_RDONLY)
os.fsync(dfd)
os.close(dfd)
for i in range(n):
    with open(f"{d}/f{i}", "rb") as f:
        f.read()
    os.stat(f"{d}/f{i}")
for i in range(n):
    os.unlink(f"{d}/f{i}")
big = f"{d}/big"
fd = os.open(big, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunk = b"y" * (1 << 20)
for _ in range(64):
    os.write(fd, chunk)
os.fdatasync(fd)
os.close(fd)
with open(big, "rb") as f:
    while f.read(1 << 20):
        pass
os.unlink(big)
