"""Medians per target and viewer count from compare.sh's RESULT lines, as a Markdown table."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in sys.stdin:
    parts = line.split()
    if len(parts) < 4 or parts[3] != "RESULT":
        continue
    target, n = parts[0], int(parts[1])
    kv = dict(p.split("=", 1) for p in parts[4:] if "=" in p)
    run = {k: float(v) for k, v in kv.items()}
    run["run"] = int(parts[2])
    rows[(target, n)].append(run)

def med(runs, key):
    vals = [r[key] for r in runs if key in r and r[key] == r[key]]
    return statistics.median(vals) if vals else float("nan")

print("| target | viewers | delivered Mbit/s | server CPU % | Gbit/s per CPU-s | loss % | latency p50/p99 ms | first keyframe p50/p99 ms | RSS growth/viewer KB | wake-ups/s | skips late/send (packets) | runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for (target, n), runs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
    # Runs where the load generator itself used most of a core measure it, not the server.
    limited = [r for r in runs if r.get("generator_limited") == 1.0]
    if limited and len(limited) * 2 >= len(runs):
        print(f"| {target} | {n} | generator-limited in {len(limited)} of {len(runs)} runs: not reported | | | | | | | | | {len(runs)} |")
        continue
    runs = [r for r in runs if r.get("generator_limited") != 1.0]
    mbps = med(runs, "mbps")
    # The server's CPU over the measurement window itself (itg-load --server-pid), else over
    # the whole run.
    cpu, wall = med(runs, "server_cpu_s"), med(runs, "secs")
    if cpu != cpu:
        cpu, wall = med(runs, "cpu_s"), med(runs, "wall_s")
    cpu_pct = 100 * cpu / wall if wall else float("nan")
    per_cpu = (mbps / 1000 * wall / cpu) if cpu else float("nan")
    rss = (med(runs, "rss_kb") - med(runs, "base_rss_kb")) / max(n, 1)
    # Drops by reason in the window (ITG only; the build before this counter reads "-").
    skips = "-"
    if med(runs, "skips_late") == med(runs, "skips_late"):
        skips = f"{med(runs, 'skips_late'):.0f}/{med(runs, 'skips_send'):.0f} ({med(runs, 'skipped_packets'):.0f})"
    print(f"| {target} | {n} | {mbps:.2f} | {cpu_pct:.1f} | {per_cpu:.3f} | {med(runs, 'loss_pct'):.3f} | "
          f"{med(runs, 'lat_p50_ms'):.2f}/{med(runs, 'lat_p99_ms'):.2f} | {med(runs, 'key_p50_ms'):.0f}/{med(runs, 'key_p99_ms'):.0f} | "
          f"{rss:.0f} | {med(runs, 'wakeups_per_s'):.0f} | {skips} | {len(runs)} |")
def eff(run):
    """Delivered Mbit/s per server CPU-second of one run (its CPU over the window itself)."""
    cpu, wall = run.get("server_cpu_s", float("nan")), run.get("secs", float("nan"))
    if cpu != cpu:
        cpu, wall = run.get("cpu_s", float("nan")), run.get("wall_s", float("nan"))
    return run["mbps"] * wall / cpu if cpu else float("nan")

# Runs of the same number ran side by side in time (compare.sh interleaves the targets): the
# ratio is taken run by run, and its median and range are printed.
for n in sorted({n for (_, n) in rows}):
    for a_name, b_name in [("itg", "janus"), ("itg-whip", "itg"), ("itg", "itg-base")]:
        ok = lambda runs: {r["run"]: r for r in runs or [] if r.get("generator_limited") != 1.0}
        a, b = ok(rows.get((a_name, n))), ok(rows.get((b_name, n)))
        ratios = sorted(eff(a[k]) / eff(b[k]) for k in a.keys() & b.keys())
        ratios = [x for x in ratios if x == x]
        if ratios:
            print(f"\n{n} viewers: {a_name}/{b_name} delivered per server CPU-second = "
                  f"{statistics.median(ratios):.2f}x (median of {len(ratios)} paired runs, "
                  f"{ratios[0]:.2f}-{ratios[-1]:.2f})")
