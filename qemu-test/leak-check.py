#!/usr/bin/env python3
"""Counts the kmemleak reports that are vblk's.

    leak-check.py REPORT BASE SIZE    (BASE, SIZE: vblk's /proc/modules line)
    leak-check.py --self-test

A report is vblk's when the first frame of its allocation backtrace that
is not an allocator (a function with "alloc" in its name, kstrdup,
kmemdup, kasprintf) is vblk's: it names vblk (`[vblk]`), lies in the
module's former address range (the report was made after `rmmod`, when
vblk's frames are bare addresses), or is Rust code (vblk is the only Rust
user in the test kernel). A leak the kernel itself makes on an error path
with vblk further up the stack (fault injection finds such: slab's sysfs
setup forgets a kobject name when it fails) is counted apart, as
"kernel leaks under vblk", and does not fail the run.
Prints vblk's reports and a last line
"vblk leaks: N (kernel leaks under vblk: K, other reports: M)"; exits 1 if N > 0.
"""
import re
import sys

# A backtrace line: "[<addr>] sym+off/len [mod]" (older kernels) or
# "sym+off/len [mod]" / "0xaddr" (6.12).
FRAME = re.compile(r"^\s+(?:\[<([0-9a-f]+)>\]\s*)?(\S+)(.*)$")
ALLOCATOR = re.compile(r"alloc|kstrdup|kmemdup|kasprintf")


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


def frames(block):
    """(address or None, symbol, rest) of each backtrace line."""
    lines = block.split("backtrace", 1)[-1].splitlines()[1:]
    return [m.groups() for m in map(FRAME.match, lines) if m]


def frame_is_vblk(addr, sym, rest, base, size):
    if "[vblk]" in rest or sym.startswith("_R"):
        return True
    for a in (addr, sym if sym.startswith("0x") else None):
        if a is not None and base <= int(a, 16) < base + size:
            return True
    return False


def classify(block, base, size):
    """'vblk', 'kernel' (vblk further up the stack) or 'other'."""
    fs = frames(block)
    if not any(frame_is_vblk(*f, base, size) for f in fs):
        return "other"
    for addr, sym, rest in fs:
        if ALLOCATOR.search(sym) and not frame_is_vblk(addr, sym, rest, base, size):
            continue
        return "vblk" if frame_is_vblk(addr, sym, rest, base, size) else "kernel"
    return "kernel"


def count(text, base, size):
    """vblk's reports, and how many are the kernel's under vblk / others."""
    kinds = [(b, classify(b, base, size)) for b in reports(text)]
    mine = [b for b, k in kinds if k == "vblk"]
    return mine, sum(k == "kernel" for _, k in kinds), sum(k == "other" for _, k in kinds)


SAMPLE = """unreferenced object 0xffff888104a1c000 (size 64):
  comm "vblkctl", pid 312, jiffies 4294900000
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 0):
    __kmalloc_noprof+0x1f0/0x2a0
    0xffffffffc0a01234
    do_syscall_64+0x40/0x80
unreferenced object 0xffff888104a1d000 (size 32):
  comm "swapper/0", pid 1, jiffies 4294800000
  backtrace (crc 0):
    __kmalloc_noprof+0x1f0/0x2a0
    virtio_dev_probe+0x10/0x20
unreferenced object 0xffff888104a1e000 (size 128):
  comm "kworker/u4:1", pid 40, jiffies 4294900100
  backtrace (crc 0):
    __kmalloc_noprof+0x1f0/0x2a0
    vblk_shim_pool_new+0x10/0x80 [vblk]
unreferenced object 0xffff88810111f3e0 (size 8):
  comm "vblk-fuzz", pid 782, jiffies 4294941764
  backtrace (crc 95d620d1):
    __kmalloc_node_track_caller_noprof+0x1be/0x390
    kstrdup+0x2e/0x60
    kobject_set_name_vargs+0x56/0xf0
    sysfs_slab_add+0x7f/0x1b0
    bioset_init+0x352/0x640
    vblk_shim_disk_create+0x2d8/0x8f0 [vblk]
unreferenced object 0xffff88810111f400 (size 96):
  comm "vblkctl", pid 790, jiffies 4294941999
  backtrace (crc 1):
    [<ffffffff81234567>] krealloc_noprof+0x50/0x90
    [<ffffffff81300000>] _RNvXs_NtCs1_6kernel5alloc9allocator7Kmalloc7realloc+0x20/0x40
    [<ffffffff81000000>] do_syscall_64+0x40/0x80
"""


def self_test():
    n, fails = 0, 0

    def ok(cond, what):
        nonlocal n, fails
        n += 1
        print(("ok" if cond else "not ok") + f" {n} - {what}")
        fails += 0 if cond else 1

    mine, kernel, other = count(SAMPLE, 0xFFFFFFFFC0A00000, 0x10000)
    ok(len(reports(SAMPLE)) == 5, "five reports parsed")
    ok(len(mine) == 3, "a bare address in range, a [vblk] frame and Rust code are vblk's")
    ok(kernel == 1, "kstrdup in kobject code under vblk is the kernel's leak")
    ok(other == 1, "a virtio leak is nobody's business here")
    mine, kernel, other = count(SAMPLE, 0xFFFFFFFFC0C00000, 0x10000)
    ok(len(mine) == 2 and other == 2, "out of range: the [vblk] frame and Rust code only")
    ok(count("", 0, 0) == ([], 0, 0), "an empty report is no leak")
    return 1 if fails else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    path, base, size = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
    with open(path, encoding="utf-8", errors="replace") as f:
        mine, kernel, other = count(f.read(), base, size)
    for block in mine:
        print(block)
    print(f"vblk leaks: {len(mine)} (kernel leaks under vblk: {kernel}, other reports: {other})")
    return 1 if mine else 0


if __name__ == "__main__":
    sys.exit(main())
