#!/usr/bin/env python3
"""Aggregate a `make bench` run (bench/guest-bench.sh's output) into a JSON
results file and a markdown table that leads with the vblk/dm ratios.

    bench/aggregate.py BENCH_DIR --out DIR [--mode full|quick]
        [--module-version V] [--host-load FILE] [--seconds-total N]

Writes DIR/DATE-KERNEL-vblk-V.json and .md (a -2, -3... suffix if that name
is taken) and DIR/latest.md, and prints the table. Python 3 standard
library only.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import sys

USER_HZ = 100  # /proc/stat ticks per second (fixed by the kernel ABI)
# p50/p99: total latency (submission to completion, fio's lat); clat: from
# the end of submission only, close to 0 when a request completes inside
# io_uring_enter (null_blk at iodepth 1).
METRICS = ("iops", "mibs", "p50_us", "p99_us", "clat_p50_us", "clat_p99_us", "cpu_sys_us", "cpu_fio_us")


def load_fio(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # fio may print warnings before the JSON document
    return json.loads(text[text.index("{"):])


def cpu_busy_ticks(stat_path):
    """Busy and total ticks of all CPUs between the two /proc/stat lines."""
    with open(stat_path, encoding="utf-8") as f:
        rows = [l.split() for l in f if l.startswith("cpu ")]
    if len(rows) != 2:
        return None, None
    a, b = ([int(x) for x in r[1:9]] for r in rows)
    d = [y - x for x, y in zip(a, b)]
    user, nice, system, idle, iowait, irq, softirq, steal = d
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


_fio_cache = {}


def run_metrics(json_path, jobname, stat_path):
    if json_path not in _fio_cache:
        _fio_cache[json_path] = load_fio(json_path)
    jobs = [j for j in _fio_cache[json_path]["jobs"] if j["jobname"] == jobname]
    if len(jobs) != 1:
        raise SystemExit(f"aggregate: no job '{jobname}' in {json_path}")
    job = jobs[0]
    if job.get("error"):
        raise SystemExit(f"aggregate: fio reported error {job['error']} for {jobname} in {json_path}")
    rd, wr = job["read"], job["write"]
    main = rd if rd["total_ios"] >= wr["total_ios"] else wr
    ios = rd["total_ios"] + wr["total_ios"]
    if ios == 0:
        raise SystemExit(f"aggregate: no I/O for {jobname} in {json_path}")
    cpct = main["clat_ns"].get("percentile", {})
    lpct = main["lat_ns"].get("percentile") or cpct
    m = {
        "ios": ios,
        "iops": rd["iops"] + wr["iops"],
        "mibs": (rd["bw_bytes"] + wr["bw_bytes"]) / 2**20,
        "p50_us": lpct.get("50.000000", 0) / 1000,
        "p99_us": lpct.get("99.000000", 0) / 1000,
        "clat_p50_us": cpct.get("50.000000", 0) / 1000,
        "clat_p99_us": cpct.get("99.000000", 0) / 1000,
        # fio's own CPU (its process: submission, and completions that run
        # in interrupts taken while it ran)
        "cpu_fio_us": (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["job_runtime"] * 1000 / ios,
        "cpu_sys_us": None,
        "cpu_util": None,
    }
    busy, total = cpu_busy_ticks(stat_path)
    if busy is not None:
        # every CPU's busy time (irq, softirq, kernel threads included)
        m["cpu_sys_us"] = busy * 1e6 / USER_HZ / ios
        m["cpu_util"] = busy / total if total else None
    return m


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def host_noise(path, own_vms=1):
    """Load average and other QEMU processes seen while the bench ran."""
    if not path or not os.path.exists(path):
        return None
    loads, others = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            loads.append(float(parts[1]))
            others.append(max(int(parts[2]) - own_vms, 0))
    if not loads:
        return None
    return {
        "host_cpus": os.cpu_count(),
        "samples": len(loads),
        "load1_median": statistics.median(loads),
        "load1_max": max(loads),
        "other_vms_max": max(others),
        "samples_with_other_vms": sum(1 for o in others if o > 0),
    }


def fmt_ratio(s, bold=False):
    if not s:
        return "–"
    text = f"{s['median']:.2f}"
    if bold:
        text = f"**{text}**"
    if s["n"] > 1:
        text += f" ({s['min']:.2f}..{s['max']:.2f})"
    return text


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_adaptive(x):
    """Three significant digits or so: 12,345 / 123 / 12.3 / 1.23."""
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def shape_label(shape):
    # randread-4k-qd32 -> randread 4k QD32
    return re.sub(r"-qd(\d+)$", r" QD\1", shape).replace("-", " ")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--module-version", default="unknown")
    ap.add_argument("--host-load")
    ap.add_argument("--seconds-total", type=int)
    args = ap.parse_args()

    with open(os.path.join(args.bench_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    bs_of = {}
    for s in meta.get("shapes", []):
        name, *opts = s.split()
        for o in opts:
            if o.startswith("--bs="):
                bs = o[5:].lower()
                bs_of[name] = int(bs[:-1]) * 1024 if bs.endswith("k") else int(bs)

    # (backing, target, shape) -> pair -> side -> metrics, in manifest order
    groups, raw, order = {}, {}, []
    with open(os.path.join(args.bench_dir, "manifest.tsv"), encoding="utf-8") as f:
        for line in f:
            # backing target shape pair side fio-json stat-file [job]: the
            # job's name in the fio JSON (older runs, one process per side:
            # no 8th column, the job is named after the shape)
            backing, target, shape, pair, side, fio_json, stat, *job = line.rstrip("\n").split("\t")
            job = job[0] if job else shape
            m = run_metrics(os.path.join(args.bench_dir, fio_json), job, os.path.join(args.bench_dir, stat))
            if side == "raw":
                raw[(backing, shape)] = m
                continue
            key = (backing, target, shape)
            if key not in groups:
                groups[key] = {}
                order.append(key)
            p = groups[key].setdefault(int(pair), {"first": side})
            p[side] = m

    results = []
    for key in order:
        backing, target, shape = key
        pairs = [dict(pair=n, **v) for n, v in sorted(groups[key].items()) if "vblk" in v and "dm" in v]
        unit = "MiB/s" if bs_of.get(shape, 4096) >= 65536 else "IOPS"
        thr = "mibs" if unit == "MiB/s" else "iops"
        rw = raw.get((backing, shape))
        res = {
            "backing": backing,
            "target": target,
            "shape": shape,
            "unit": unit,
            "ratio": {m: spread([ratio(p["vblk"][m], p["dm"][m]) for p in pairs]) for m in METRICS},
            "vblk": {m: median([p["vblk"][m] for p in pairs]) for m in METRICS},
            "dm": {m: median([p["dm"][m] for p in pairs]) for m in METRICS},
            "raw": {m: rw[m] for m in METRICS} if rw else None,
            "pairs": pairs,
        }
        res["ratio"]["throughput"] = res["ratio"][thr]
        res["vblk_over_raw"] = ratio(res["vblk"][thr], rw[thr]) if rw else None
        res["dm_over_raw"] = ratio(res["dm"][thr], rw[thr]) if rw else None
        results.append(res)

    now = datetime.datetime.now()
    kernel = meta.get("kernel", "unknown")
    noise = host_noise(args.host_load)
    doc = {
        "date": now.isoformat(timespec="seconds"),
        "mode": args.mode,
        "kernel": kernel,
        "module_version": args.module_version,
        "seconds_total": args.seconds_total,
        "guest": meta,
        "host_noise": noise,
        "results": results,
    }

    # ---- markdown
    thr_note = {"IOPS": "IOPS", "MiB/s": "MiB/s"}
    md = []
    md.append(f"# vblk vs device-mapper: {now:%Y-%m-%d}, kernel {kernel}, vblk {args.module_version}")
    md.append("")
    vcpus = meta.get("cpus")
    md.append(
        f"`make bench` ({args.mode} mode): {meta.get('pairs')} A/B pairs per shape, "
        f"{meta.get('runtime_s')} s per fio job, {meta.get('fio')} io_uring `direct=1`, "
        f"{vcpus} vCPUs under QEMU TCG (no KVM), bench kernel without debug options; "
        f"vblk and dm load the same table, each over its own half of identical lower devices, "
        f"and a pair is one fio process that runs both sides shape by shape, back to back. "
        f"Method and how to read this: [Documentation/benchmarking.md](../../Documentation/benchmarking.md)."
    )
    md.append("")
    if noise:
        md.append(
            f"Host noise while it ran ({noise['host_cpus']} host CPUs): load average median "
            f"{noise['load1_median']:.1f}, max {noise['load1_max']:.1f}; other VMs running in "
            f"{noise['samples_with_other_vms']} of {noise['samples']} samples (at most {noise['other_vms_max']})."
        )
        md.append("")
    md.append("## Ratios vblk / dm")
    md.append("")
    md.append(
        f"Median of the per-pair ratios, (min..max) over the pairs. Throughput above 1: vblk "
        f"is faster. Latency and CPU per I/O below 1: vblk is better. *vblk / raw* and "
        f"*dm / raw*: the throughput each layer keeps of the bare lower device."
    )
    md.append("")
    md.append("| lower | target | shape | throughput | p50 latency | p99 latency | CPU per I/O | vblk / raw | dm / raw |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rt = r["ratio"]
        md.append(
            f"| {r['backing']} | {r['target']} | {shape_label(r['shape'])} | "
            f"{fmt_ratio(rt['throughput'], bold=True)} | {fmt_ratio(rt['p50_us'])} | "
            f"{fmt_ratio(rt['p99_us'])} | {fmt_ratio(rt['cpu_sys_us'])} | "
            f"{fmt_num(r['vblk_over_raw'], 2)} | {fmt_num(r['dm_over_raw'], 2)} |"
        )
    md.append("")
    md.append("## Absolute numbers (medians; under TCG they mean little)")
    md.append("")
    md.append(
        "Latency is fio's total latency (submission to completion, `lat`) in µs. CPU per I/O in µs: *sys* is every "
        "CPU's busy time from /proc/stat (interrupts, softirqs, kernel threads included) divided "
        "by the I/Os; *fio* is fio's own usr+sys time."
    )
    md.append("")
    md.append("| lower | target | shape | unit | raw | vblk | dm | p50 raw / vblk / dm | p99 raw / vblk / dm | CPU sys raw / vblk / dm | CPU fio raw / vblk / dm |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        thr = "mibs" if r["unit"] == "MiB/s" else "iops"
        rw = r["raw"] or {}

        def trio(m):
            return " / ".join(fmt_adaptive(x) for x in (rw.get(m), r["vblk"][m], r["dm"][m]))

        md.append(
            f"| {r['backing']} | {r['target']} | {shape_label(r['shape'])} | {thr_note[r['unit']]} | "
            f"{fmt_adaptive(rw.get(thr))} | {fmt_adaptive(r['vblk'][thr])} | {fmt_adaptive(r['dm'][thr])} | "
            f"{trio('p50_us')} | {trio('p99_us')} | {trio('cpu_sys_us')} | {trio('cpu_fio_us')} |"
        )
    md.append("")
    md.append("Lower devices:")
    md.append("")
    for b, desc in meta.get("backings", {}).items():
        md.append(f"- `{b}`: {desc}")
    md.append("")
    md.append(
        f"Guest: kernel `{meta.get('kernel_full', '').strip()}`, vblk control ABI "
        f"{meta.get('vblk', {}).get('module_abi', '?')}, vblk targets: {meta.get('vblk_targets', '?')}; "
        f"dm: {meta.get('dm', '?').strip()}."
        + (f" Whole run: {args.seconds_total} s." if args.seconds_total else "")
    )
    md_text = "\n".join(md) + "\n"

    os.makedirs(args.out, exist_ok=True)
    safe = lambda s: re.sub(r"[^A-Za-z0-9._+-]", "_", s)
    stem = f"{now:%Y-%m-%d}-{safe(kernel)}-vblk-{safe(args.module_version)}"
    name, n = stem, 1
    while os.path.exists(os.path.join(args.out, name + ".json")):
        n += 1
        name = f"{stem}-{n}"
    json_path = os.path.join(args.out, name + ".json")
    md_path = os.path.join(args.out, name + ".md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(md_text)
    shutil.copyfile(md_path, os.path.join(args.out, "latest.md"))
    sys.stdout.write(md_text)
    print(f"\nbench: results in {json_path} and {md_path} (also {os.path.join(args.out, 'latest.md')})", file=sys.stderr)


if __name__ == "__main__":
    main()
