#!/usr/bin/env python3
"""raid5-parity.py SECTORS LEG...: XORs the first SECTORS sectors of every leg
and prints how many 4 KiB rows are not zero (a RAID-4/5 array's parity is
right where the XOR of all legs is zero, whatever the layout)."""
import os
import sys

sectors = int(sys.argv[1])
legs = [os.open(p, os.O_RDONLY | os.O_DIRECT) for p in sys.argv[2:]]
step = 1 << 20
total = sectors * 512
bad = 0
import mmap
buf = mmap.mmap(-1, step)
at = 0
while at < total:
    n = min(step, total - at)
    acc = 0
    for fd in legs:
        os.lseek(fd, at, os.SEEK_SET)
        got = os.readv(fd, [buf])
        if got < n:
            sys.exit(f"short read at byte {at}")
        acc ^= int.from_bytes(buf[:n], "little")
    if acc:
        raw = acc.to_bytes(n, "little")
        bad += sum(1 for i in range(0, n, 4096) if any(raw[i:i + 4096]))
    at += n
print(bad)
