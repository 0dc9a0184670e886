#!/usr/bin/python3
"""Baseline for persist: the bare syscalls a persist of argv[2] directory entries needs, with no
checks, no plan and no ownership work: per entry one mkdir(2) of the target and one bind mount(2)
of `<root>/persist/srv/pN` onto `<root>/srv/pN` (through ctypes: no fork per entry). Prints the
loop's own time in µs, so the interpreter's start-up (~15 ms) is not counted against the floor."""
import ctypes
import os
import sys
import time

MS_BIND = 4096
libc = ctypes.CDLL(None, use_errno=True)
root, n = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter_ns()
os.mkdir(f"{root}/srv")
for i in range(n):
    src, dst = f"{root}/persist/srv/p{i}".encode(), f"{root}/srv/p{i}".encode()
    os.mkdir(dst, 0o755)
    if libc.mount(src, dst, None, MS_BIND, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)
print((time.perf_counter_ns() - t0) // 1000)
