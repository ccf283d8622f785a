#!/usr/bin/env python3
"""Where the CPU goes while the bench's workers run, from a system-wide `perf record -a -g`.

Reads `perf script` output (with call chains) on stdin. The windows are the lifetimes of the
worker processes (`target/release/tributary`, told apart from `tributary-bench` by the binary
their frames come from); only samples inside a window count. Prints the share of samples by
process kind (and how much of it is in the kernel), then, for PostgreSQL, the worker and Redis,
the functions with the most samples of their own (the leaf frame: call chains through
PostgreSQL and a release build without frame pointers are incomplete, leaves are not).

    perf record -a -F 499 -o drain.data -- sleep 30 &   # while the bench runs (-g: chains)
    perf script -i drain.data -F comm,pid,tid,time,ip,sym,dso | python3 docs/tools/perf_windows.py

The windows are per process (pid), from its first to its last sample.
"""

import collections
import re
import sys

# "comm pid[/tid] [cpu] time:" and, without call chains, the sample's frame on the same line.
HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)(?:/\d+)?\s+(?:\[\d+\]\s+)?([\d.]+):\s*(.*)$")
FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)$")


def samples(stream):
    head, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        m = HEADER.match(line)
        if m:
            if head:
                yield head, frames
            head, frames = (m.group(1), int(m.group(2)), float(m.group(3))), []
            inline = FRAME.match(m.group(4))
            if inline:
                frames.append((inline.group(1), inline.group(2)))
        elif line.strip():
            f = FRAME.match(line)
            if f:
                frames.append((f.group(1), f.group(2)))
    if head:
        yield head, frames


def main():
    all_samples = list(samples(sys.stdin))
    worker_pids = collections.defaultdict(list)
    for (comm, pid, t), frames in all_samples:
        if any(dso.endswith("/release/tributary") for _, dso in frames):
            worker_pids[pid].append(t)
    windows = sorted((min(ts), max(ts)) for ts in worker_pids.values() if len(ts) > 20)
    if not windows:
        sys.exit("no worker samples found")
    inside = lambda t: any(a <= t <= b for a, b in windows)
    kinds = collections.Counter()
    leaves = collections.defaultdict(collections.Counter)
    kernel = collections.Counter()
    for (comm, pid, t), frames in all_samples:
        if not inside(t):
            continue
        if comm == "swapper":
            kind = "idle"
        elif comm == "postgres":
            kind = "postgres"
        elif pid in worker_pids:
            kind = "worker"
        elif comm.startswith("redis") or comm in ("bio_aof_fsync", "io_thd"):
            kind = "redis"
        elif any(d.endswith("tributary-bench") for _, d in frames):
            kind = "bench"
        else:
            kind = "other"
        kinds[kind] += 1
        if frames:
            name, dso = frames[0]
            name = name.split("+")[0]
            if dso == "[kernel.kallsyms]":
                kernel[kind] += 1
            leaves[kind][f"{name[:90]} ({dso.rsplit('/', 1)[-1]})"] += 1
    total = sum(kinds.values())
    print(f"samples while a worker ran: {total}")
    for kind, n in kinds.most_common():
        print(f"  {kind:10} {100 * n / total:5.1f} % of all; in the kernel {100 * kernel[kind] / n:4.1f} % of its own")
    for kind in ("postgres", "worker", "redis"):
        n = kinds[kind]
        if not n:
            continue
        print(f"{kind}: top functions by own samples (% of {kind}'s {n} samples)")
        for name, k in leaves[kind].most_common(TOP):
            print(f"  {100 * k / n:5.1f} %  {name}")


TOP = 15
main()
