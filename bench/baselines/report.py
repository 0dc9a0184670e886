#!/usr/bin/python3
"""Turns bench/run's raw timings (case, variant, µs per line) into the issue's table: medians, spread
(min–max), ratios within the run, the target and whether it is met; argv[5] holds the peak RSS (KiB)
of every tabula case and of some baselines."""
import statistics
import sys
from collections import OrderedDict

path, nested, scale, configs = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
data = OrderedDict()
for line in open(path):
    case, variant, value = line.rstrip("\n").split("\t")
    data.setdefault(case, OrderedDict()).setdefault(variant, []).append(int(value))
rss = OrderedDict()
for line in open(sys.argv[5]) if len(sys.argv) > 5 else []:
    case, variant, value = line.rstrip("\n").split("\t")
    rss.setdefault((case, variant), []).append(int(value))
RSS_LIMIT_KIB = 10 * 1024


def peak(case, variant):
    """The largest peak RSS of a case's variant, in KiB (None if not measured)."""
    v = rss.get((case, variant))
    return max(v) if v else None


def mb(kib):
    return f"{kib / 1024:.1f} MB"


def med(case, variant):
    return statistics.median(data[case][variant])


def fmt(us):
    return f"{us / 1e6:.2f} s" if us >= 1e6 else f"{us / 1e3:.1f} ms"


def cell(case, variant):
    v = data[case][variant]
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))}, n={len(v)})"


rows = []
c = f"rollback, {nested} retired roots × 20 nested"
if c in data:
    t, floor = med(c, "tabula"), med(c, "bare snapshot (floor)")
    sh = med(c, "shell script rotation")
    rows.append((c, cell(c, "tabula"),
                 f"bare snapshot {cell(c, 'bare snapshot (floor)')}; shell rotation {cell(c, 'shell script rotation')}",
                 f"×{t / floor:.2f} the floor, ×{t / sh:.2f} the shell", "≤ 1.2 × bare snapshot",
                 "met" if t <= 1.2 * floor else "MISSED"))
c = "rollback at N retired roots"
if c in data:
    first, last = med(c, f"{scale[0]} roots"), med(c, f"{scale[-1]} roots")
    rows.append((f"rollback at {' / '.join(scale)} retired roots",
                 " / ".join(cell(c, f"{n} roots") for n in scale), "—",
                 f"×{last / first:.2f} from {scale[0]} to {scale[-1]}", "flat: ≤ ×1.2",
                 "met" if last <= 1.2 * first else "MISSED"))
for c in [k for k in data if k.startswith("prune ")]:
    t = med(c, "tabula")
    lib = "python3-btrfsutil recursive delete + 1 commit"
    sh = "shell script (subvolume list -o recursion)"
    rows.append((c, cell(c, "tabula"), f"btrfsutil {cell(c, lib)}; shell {cell(c, sh)}",
                 f"×{t / med(c, lib):.2f} btrfsutil, ×{t / med(c, sh):.2f} shell",
                 "≤ the C library + one commit", "met" if t <= med(c, lib) else "MISSED"))
for c in [k for k in data if k.startswith("diff") and k.endswith("(warm)")]:
    t, walk = med(c, "tabula (send stream)"), med(c, "tabula --walk")
    fn = med(c, "btrfs subvolume find-new (misses deletions)")
    rows.append((c, f"{cell(c, 'tabula (send stream)')}; --walk {cell(c, 'tabula --walk')}",
                 f"rsync {cell(c, 'rsync -n (dry run)')}; find-new {cell(c, 'btrfs subvolume find-new (misses deletions)')}",
                 f"×{t / fn:.1f} find-new, ×{t / med(c, 'rsync -n (dry run)'):.2f} rsync, ×{t / walk:.2f} the walk",
                 "≤ 10 × find-new, exact", "met" if t <= 10 * fn else "MISSED"))
diffs = [k for k in data if k.startswith("diff") and k.endswith("(warm)")]
if len(diffs) == 2:
    small, big = diffs
    t = med(big, "tabula (send stream)") / med(small, "tabula (send stream)")
    w = med(big, "tabula --walk") / med(small, "tabula --walk")
    n = int(big.split()[1]) / int(small.split()[1])
    rows.append((f"diff growth, {big.split()[1]} / {small.split()[1]} files (×{n:.0f}), 110 changes",
                 f"×{t:.2f}", f"--walk ×{w:.2f}", "—", "flat in tree size: ≤ ×1.5",
                 "met" if t <= 1.5 else "MISSED"))
colds = [k for k in data if k.startswith("diff") and k.endswith("(cold cache)")]
for c in colds:
    t, walk, rs = med(c, "tabula (send stream)"), med(c, "tabula --walk"), med(c, "rsync -n (dry run)")
    rows.append((c, f"{cell(c, 'tabula (send stream)')}; --walk {cell(c, 'tabula --walk')}",
                 f"rsync {cell(c, 'rsync -n (dry run)')}",
                 f"×{t / rs:.2f} rsync, ×{t / walk:.2f} the walk", "≤ rsync -n",
                 "met" if t <= rs else "MISSED"))
if len(colds) == 2:
    small, big = colds
    t = med(big, "tabula (send stream)") / med(small, "tabula (send stream)")
    w = med(big, "tabula --walk") / med(small, "tabula --walk")
    r = med(big, "rsync -n (dry run)") / med(small, "rsync -n (dry run)")
    n = int(big.split()[1]) / int(small.split()[1])
    rows.append((f"diff growth, cold cache, {big.split()[1]} / {small.split()[1]} files (×{n:.0f})",
                 f"×{t:.2f}", f"--walk ×{w:.2f}; rsync ×{r:.2f}", "—", "flat in tree size: ≤ ×1.5",
                 "met" if t <= 1.5 else "MISSED"))
c = "config load"
if c in data:
    tab = [med(c, f"{n} entries: tabula check") for n in configs]
    par = [med(c, f"{n} entries: TOML parser alone (python tomllib)") for n in configs]
    growth = tab[-1] / tab[-2]
    want = int(configs[-1]) / int(configs[-2])
    rows.append((f"config load, {' / '.join(configs)} entries (tabula check)",
                 " / ".join(fmt(x) for x in tab), "tomllib alone: " + " / ".join(fmt(x) for x in par),
                 f"×{growth:.2f} for ×{want:.0f} entries", f"linear: ≤ ×{want * 1.3:.1f}",
                 "met" if growth <= want * 1.3 else "MISSED"))
for c in [k for k in data if k.startswith("persist, ")]:
    t, loop = med(c, "tabula"), med(c, "bare syscalls, loop only")
    rows.append((c, cell(c, "tabula"),
                 f"bare syscalls (python ctypes mkdir + bind mount per entry): loop {cell(c, 'bare syscalls, loop only')}, "
                 f"whole process {cell(c, 'bare syscalls, whole process')}",
                 f"×{t / loop:.2f} the loop", "≤ 1.2 × the bare syscalls", "met" if t <= 1.2 * loop else "MISSED"))
for c in [k for k in data if k.startswith("restore of ")]:
    t, cp = med(c, "tabula"), med(c, "cp -a --reflink=always")
    mine, theirs = peak(c, "tabula"), peak(c, "cp -a --reflink=always")
    rows.append((c, f"{cell(c, 'tabula')}, peak RSS {mb(mine)}",
                 f"cp -a --reflink=always {cell(c, 'cp -a --reflink=always')}, peak RSS {mb(theirs)}",
                 f"×{t / cp:.2f} cp", "≤ cp's time, ≤ 10 MB",
                 "met" if t <= cp and mine <= RSS_LIMIT_KIB else "MISSED"))
for c in [k for k in data if k.startswith("persisted I/O")]:
    src = med(c, "the source itself")
    b, f = med(c, "through the bind mount"), med(c, "bindfs (FUSE)")
    rows.append((c, f"bind mount {cell(c, 'through the bind mount')}",
                 f"the source {cell(c, 'the source itself')}; bindfs {cell(c, 'bindfs (FUSE)')}",
                 f"×{b / src:.2f} the source (bindfs ×{f / src:.2f})", "stays at 1.00 (≤ ×1.05: noise)",
                 "met" if b <= 1.05 * src else "MISSED"))
mine = [(c, v, max(x)) for (c, v), x in rss.items() if v.startswith("tabula") or v.endswith("entries: tabula check")
        or c.startswith("rollback at")]
if mine:
    worst = max(mine, key=lambda m: m[2])
    rows.append(("peak RSS, every tabula case", f"max {mb(worst[2])} ({worst[0]}: {worst[1]})",
                 "; ".join(f"{c} / {v}: {mb(k)}" for c, v, k in mine), "—", "≤ 10 MB everywhere",
                 "met" if worst[2] <= RSS_LIMIT_KIB else "MISSED"))
c = "static binary"
if c in data:
    size = data[c]["bytes"][0]
    rows.append(("static binary", f"{size / 1e6:.2f} MB", "—", "—", "≤ 3 MB",
                 "met" if size <= 3e6 else "MISSED"))

print("| case | tabula: median (min–max, runs) | baselines, same run | ratio | target | |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
