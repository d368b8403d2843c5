#!/usr/bin/env python3
"""Counts the kmemleak reports that are vblk's.

    leak-check.py REPORT BASE SIZE    (BASE, SIZE: vblk's /proc/modules line)
    leak-check.py --self-test

A report is vblk's when a frame of its allocation backtrace names vblk
(`[vblk]`, scanned while the module is loaded) or lies in the module's
former address range (scanned after `rmmod`, when the frames are bare
addresses). Prints each of vblk's reports and a last line
"vblk leaks: N (other reports: M)"; exits 1 if N > 0.
"""
import re
import sys

FRAME = re.compile(r"\[<([0-9a-f]+)>\]")


def reports(text):
    """The report blocks of a kmemleak file, one string each."""
    blocks, cur = [], []
    for line in text.splitlines():
        if line.startswith("unreferenced object") and cur:
            blocks.append("\n".join(cur))
            cur = []
        if line.strip():
            cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return [b for b in blocks if b.startswith("unreferenced object")]


def is_vblk(block, base, size):
    if "[vblk]" in block:
        return True
    return any(base <= int(addr, 16) < base + size for addr in FRAME.findall(block))


def count(text, base, size):
    mine = [b for b in reports(text) if is_vblk(b, base, size)]
    return mine, len(reports(text)) - len(mine)


SAMPLE = """unreferenced object 0xffff888104a1c000 (size 64):
  comm "vblkctl", pid 312, jiffies 4294900000
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 0):
    [<ffffffff81234567>] __kmalloc_noprof+0x1f0/0x2a0
    [<ffffffffc0a01234>] 0xffffffffc0a01234
    [<ffffffff81000000>] do_syscall_64+0x40/0x80
unreferenced object 0xffff888104a1d000 (size 32):
  comm "swapper/0", pid 1, jiffies 4294800000
  backtrace (crc 0):
    [<ffffffff81234567>] __kmalloc_noprof+0x1f0/0x2a0
    [<ffffffff81555555>] virtio_dev_probe+0x10/0x20
unreferenced object 0xffff888104a1e000 (size 128):
  comm "kworker/u4:1", pid 40, jiffies 4294900100
  backtrace (crc 0):
    [<ffffffff81234567>] __kmalloc_noprof+0x1f0/0x2a0
    [<ffffffffc0b00010>] vblk_shim_pool_new+0x10/0x80 [vblk]
"""


def self_test():
    n, fails = 0, 0

    def ok(cond, what):
        nonlocal n, fails
        n += 1
        print(("ok" if cond else "not ok") + f" {n} - {what}")
        fails += 0 if cond else 1

    mine, other = count(SAMPLE, 0xFFFFFFFFC0A00000, 0x10000)
    ok(len(reports(SAMPLE)) == 3, "three reports parsed")
    ok(len(mine) == 2 and other == 1, "a bare address in range and a [vblk] frame are vblk's")
    mine, other = count(SAMPLE, 0xFFFFFFFFC0C00000, 0x10000)
    ok(len(mine) == 1 and other == 2, "out of range: only the [vblk] frame")
    ok(count("", 0, 0) == ([], 0), "an empty report is no leak")
    return 1 if fails else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    path, base, size = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
    with open(path, encoding="utf-8", errors="replace") as f:
        mine, other = count(f.read(), base, size)
    for block in mine:
        print(block)
    print(f"vblk leaks: {len(mine)} (other reports: {other})")
    return 1 if mine else 0


if __name__ == "__main__":
    sys.exit(main())
