#!/usr/bin/env python3
"""Reads criterion's estimates for the given groups and prints a table; writes the same as JSON
to target/bench-results/<group>.json, so runs can be compared run against run."""
import json, os, platform, subprocess, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
groups = sys.argv[2:] or ["webhook"]
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
machine = {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}
os.makedirs("target/bench-results", exist_ok=True)
for group in groups:
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        print(f"no criterion results for {group} under {root}", file=sys.stderr)
        sys.exit(1)
    rows = []
    for name in sorted(os.listdir(gdir)):
        est = os.path.join(gdir, name, "new", "estimates.json")
        if not os.path.exists(est):
            continue
        e = json.load(open(est))
        rows.append({
            "bench": f"{group}/{name}",
            "mean_ns": e["mean"]["point_estimate"],
            "median_ns": e["median"]["point_estimate"],
            "ci95_ns": [e["mean"]["confidence_interval"]["lower_bound"], e["mean"]["confidence_interval"]["upper_bound"]],
        })
    print(f"\nmachine: {cpu}, {machine['cores']} cores")
    print(f"{'benchmark':<34} {'mean':>12} {'median':>12} {'95% CI of mean':>26}")
    for r in rows:
        lo, hi = r["ci95_ns"]
        print(f"{r['bench']:<34} {r['mean_ns']/1000:>9.2f} µs {r['median_ns']/1000:>9.2f} µs {lo/1000:>10.2f} – {hi/1000:.2f} µs")
    out = os.path.join("target/bench-results", f"{group}.json")
    json.dump({"machine": machine, "results": rows}, open(out, "w"), indent=2)
    print(f"written: {out}")
