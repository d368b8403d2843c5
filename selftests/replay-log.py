#!/usr/bin/env python3
"""Replays a dm-log-writes log (crash-consistency testing, in the guest).

    replay-log.py LOG points            every FLUSH/FUA entry: "INDEX FLAGS"
    replay-log.py LOG mark NAME         the index of the mark NAME
    replay-log.py LOG replay DEV A B    apply entries [A, B) to DEV
    replay-log.py --self-test

dm-log-writes records every write that completes below it, in completion
order, with its data, and every flush: the device's contents after
replaying the entries up to a FLUSH entry are a state a crash right after
that flush could leave (everything acknowledged before it is durable). The
log format is the kernel's (Documentation/admin-guide/device-mapper/
log-writes.rst): a super block in the first logical block (magic, version,
entry count, sector size; little-endian), then per entry one block with
(sector, nr_sectors, flags, data_len) followed, for a write, by its data.
Sectors and counts are in the log's sector size. A discard is replayed as
zeros (what a discard may leave).
"""
import os
import struct
import sys

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")


def entries(log):
    """(index, sector, nr_sectors, flags, data offset, sector size) of each entry."""
    with open(log, "rb") as f:
        magic, version, count, ssize = SUPER.unpack(f.read(SUPER.size))
        if magic != MAGIC or version != 1:
            raise SystemExit(f"{log}: not a dm-log-writes log (magic {magic:#x}, version {version})")
        pos = ssize
        for i in range(count):
            f.seek(pos)
            sector, nr, flags, _ = ENTRY.unpack(f.read(ENTRY.size))
            yield i, sector, nr, flags, pos + ssize, ssize
            pos += ssize
            if not flags & DISCARD:
                pos += nr * ssize


def mark(log, name):
    """Index of the mark entry named `name` (dmsetup message ... mark NAME)."""
    with open(log, "rb") as f:
        for i, _, _, flags, data, ssize in entries(log):
            if flags & MARK:
                f.seek(data - ssize)  # the entry's block: header, then the name
                length = ENTRY.unpack(f.read(ENTRY.size))[3]
                if f.read(length) == name.encode():
                    return i
    return None


def points(log):
    return [(i, flags) for i, _, _, flags, _, _ in entries(log) if flags & (FLUSH | FUA)]


def replay(log, dev, first, last):
    with open(log, "rb") as src, open(dev, "r+b", buffering=0) as dst:
        for i, sector, nr, flags, data, ssize in entries(log):
            if i < first or flags & MARK:
                continue
            if i >= last:
                break
            if flags & DISCARD:
                chunk = b"\0" * (nr * ssize)
            elif nr:
                src.seek(data)
                chunk = src.read(nr * ssize)
            else:
                continue
            dst.seek(sector * ssize)
            dst.write(chunk)
        os.fsync(dst.fileno())


def self_test():
    import tempfile

    ssize = 512
    with tempfile.TemporaryDirectory() as d:
        log, dev = os.path.join(d, "log"), os.path.join(d, "dev")
        body = []
        # write 2 sectors at 4, flush, discard 1 at 5, mark, FUA write at 0
        body.append((ENTRY.pack(4, 2, 0, 1024), b"A" * 1024))
        body.append((ENTRY.pack(0, 0, FLUSH, 0), b""))
        body.append((ENTRY.pack(5, 1, DISCARD, 0), b""))
        body.append((ENTRY.pack(0, 0, MARK, 3) + b"end", b""))
        body.append((ENTRY.pack(0, 1, FUA, 512), b"B" * 512))
        with open(log, "wb") as f:
            f.write(SUPER.pack(MAGIC, 1, len(body), ssize).ljust(ssize, b"\0"))
            for head, data in body:
                f.write(head.ljust(ssize, b"\0") + data)
        with open(dev, "wb") as f:
            f.write(b"x" * 8 * ssize)
        n, fails = 0, 0

        def ok(cond, what):
            nonlocal n, fails
            n += 1
            print(("ok" if cond else "not ok") + f" {n} - {what}")
            fails += 0 if cond else 1

        ok(points(log) == [(1, FLUSH), (4, FUA)], "flush and FUA entries are the points")
        ok(mark(log, "end") == 3 and mark(log, "nope") is None, "a mark is found by name")
        replay(log, dev, 0, 2)
        img = open(dev, "rb").read()
        ok(img[4 * ssize:6 * ssize] == b"A" * 1024 and img[:ssize] == b"x" * ssize,
           "up to the flush: the first write only")
        replay(log, dev, 2, 5)
        img = open(dev, "rb").read()
        ok(img[5 * ssize:6 * ssize] == b"\0" * ssize, "a discard replays as zeros")
        ok(img[:ssize] == b"B" * ssize and img[4 * ssize:5 * ssize] == b"A" * ssize,
           "the rest applied in order, the mark skipped")
        return 1 if fails else 0


def main():
    args = sys.argv[1:]
    if args == ["--self-test"]:
        return self_test()
    if len(args) == 2 and args[1] == "points":
        for i, flags in points(args[0]):
            print(i, flags)
        return 0
    if len(args) == 3 and args[1] == "mark":
        i = mark(args[0], args[2])
        if i is None:
            print(f"no mark {args[2]!r}", file=sys.stderr)
            return 1
        print(i)
        return 0
    if len(args) == 5 and args[1] == "replay":
        replay(args[0], args[2], int(args[3]), int(args[4]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
