#!/usr/bin/env python3
"""Compares two `make bench` result files (JSON) shape by shape.

    bench/compare.py BEFORE.json AFTER.json [TITLE]  > comparison.md

For every (lower device, target, shape) in both: the vblk/dm throughput
ratio before and after (median over the A/B pairs, min..max), and a
verdict. A change counts as slower only if the whole range of its pair
ratios lies below the whole range before (the run-to-run spread covers
the rest); faster likewise. Ratios, not IOPS, are compared: each is
measured against dm in the same fio process, which cancels most of the
host's noise between the two runs.
"""
import json
import sys


def load(path):
    with open(path) as f:
        d = json.load(f)
    rows = {}
    for r in d["results"]:
        t = r["ratio"]["iops"]
        rows[(r["backing"], r["target"], r["shape"])] = (t["median"], t["min"], t["max"])
    return d, rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, b = load(sys.argv[1])
    after, a = load(sys.argv[2])
    title = sys.argv[3] if len(sys.argv) > 3 else "vblk/dm throughput ratio, before and after"
    print(f"# {title}\n")
    print(f"Before: vblk {before['module_version']} ({before['date']}, {before['mode']}); "
          f"after: vblk {after['module_version']} ({after['date']}, {after['mode']}). "
          "Median of the per-pair vblk/dm IOPS ratios, (min..max) over the pairs; "
          "a verdict other than *same* only when the ranges do not overlap.\n")
    print("| lower | target | shape | before | after | verdict |")
    print("|---|---|---|---|---|---|")
    slower = 0
    for key in sorted(set(b) & set(a), key=lambda k: (k[0] != "nullb", k[1], k[2])):
        (bm, blo, bhi), (am, alo, ahi) = b[key], a[key]
        if ahi < blo:
            verdict, slower = "**slower**", slower + 1
        elif alo > bhi:
            verdict = "faster"
        else:
            verdict = "same"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {bm:.2f} ({blo:.2f}..{bhi:.2f}) | "
              f"{am:.2f} ({alo:.2f}..{ahi:.2f}) | {verdict} |")
    print(f"\n{slower} shape(s) slower beyond the spread.")


if __name__ == "__main__":
    main()
