"""make bench's table: reads the JSON every benchmark of scripts/bench.sh
wrote (never their text), prints the figures beside their baselines from
the same run and their gates, the per-order cost table beside its budgets,
and writes the whole of it to bench.json.

    bench_report.py RESULTS_DIR BEST_CUSTOMERS CONCURRENCY OUT_JSON
"""
import glob
import json
import os
import statistics
import sys

res, best_n, conc, out_path = sys.argv[1], int(sys.argv[2] or 0), sys.argv[3], sys.argv[4]

# What one completed order may cost for 300 orders/s on two cores (2,000 ms
# of CPU a second: 6 ms an order, all processes together), item by item;
# "was" is the first plan's cost (issue 13's table), for scale.
BUDGET = {
    "statements": (30, 200), "commits": (3, 21), "fsyncs": (3, 25),
    "kafka_requests": (12, None), "events_published": (8, 7.2), "events_consumed": (24, 27),
}
CPU_BUDGET = {
    "mysqld": 2.0, "kafka": 1.3, "order-command": 0.8, "order-query": 0.5,
    "product-query": 0.3, "payment-worker": 0.3, "notification-worker": 0.3,
    "audit-worker": 0.3, "inventory-worker": 0.2, "shop-loadgen": 0.3,
}
CPU_GATE, CPU_WAS = 6.0, 44.0


def load(name):
    try:
        with open(os.path.join(res, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs(pattern):
    out = []
    for p in sorted(glob.glob(os.path.join(res, pattern))):
        d = load(os.path.basename(p))
        if d:
            out.append(d)
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def num(x, fmt="{:.1f}", unit=""):
    return "-" if x is None else fmt.format(x) + unit


def cpu_per_order(d, by=None):
    """CPU ms per completed order (or per the count named by) of each process
    of run d (instances folded into their program), and the total."""
    done = (d.get(by) if by else d.get("completed") or d.get("accepted")) or 0
    per = {}
    for name, c in d.get("cpu_s", {}).items():
        if c.get("seconds", -1) < 0 or not done:
            continue
        prog = name.split("@")[0]
        per[prog] = per.get(prog, 0.0) + 1000.0 * c["seconds"] / done
    return per, (sum(per.values()) if per else None)


summary = {}
rows = []


def row(name, value, base, ratio, gate, met):
    rows.append((name, value, base, ratio, gate, "" if met is None else ("met" if met else "MISSED")))


# RPC layer vs raw NNG (bench-rpc --json).
rpc = load("rpc.json")
for r in (rpc or {}).get("runs", []):
    ratio = r["throughput_ratio"]
    row(f"RPC calls/s, {r['concurrency']} concurrent (bench-rpc)", num(r["full"]["calls_per_s"], "{:.0f}", "/s"),
        num(r["raw"]["calls_per_s"], "{:.0f}", "/s raw NNG"), f"{ratio:.2f}x", ">= 0.75x", ratio >= 0.75)
    summary[f"rpc_ratio_c{r['concurrency']}"] = round(ratio, 3)

# The event path vs raw librdkafka (bench-events --json).
ev = load("events.json")
if ev:
    row("event path throughput (bench-events)", num(ev["full_throughput_per_s"], "{:.0f}", "/s"),
        num(ev["raw_throughput_per_s"], "{:.0f}", "/s raw"), f"{ev['throughput_ratio']:.2f}x", "", None)
    over = ev["lag_p99_over_raw_ms"]
    row("event hop lag p99 (bench-events)", num(ev["full_lag_ms"]["p99"], "{:.1f}", " ms"),
        num(ev["raw_lag_ms"]["p99"], "{:.1f}", " ms raw"), f"+{over:.1f} ms", "<= raw + 20 ms", over <= 20)
    summary["event_lag_p99_over_raw_ms"] = round(over, 2)
    summary["event_lag_p99_ms"] = ev["full_lag_ms"]["p99"]
    summary["raw_lag_p99_ms"] = ev["raw_lag_ms"]["p99"]

# GetProduct through the gateway vs the same RPC direct (bench-gateway).
gw = load("gateway.json")
for r in (gw or {}).get("runs", []):
    g, d = r["gateway"], r["direct"]
    row(f"GetProduct via gateway, {r['threads']} concurrent (bench-gateway)",
        f"{g['per_s']:.0f}/s p50 {g['p50_ms']:.2f} ms", f"{d['per_s']:.0f}/s p50 {d['p50_ms']:.2f} ms RPC",
        f"{r['throughput_ratio']:.2f}x", "", None)

# CreateOrder vs the raw transaction of the same shape and concurrency:
# alone (its downstream consumers stopped, each run beside a raw run on the
# same machine, which is the comparison the gate makes), and with the whole
# pipeline running on the same two cores (what a customer meets under the
# sustained load; no gate: the consumers' work per order shares the cores).
raw_tx = med([d.get("tx_per_s") for d in runs("mariadb-*.json")])
nowait, alone = runs("nowait-*.json"), runs("alone-*.json")
for label, rs, key, gated in (("alone", alone, "create_order", True),
                              ("pipeline running", nowait, "create_order_pipeline", False)):
    tput = med([d["accepted_per_s"] for d in rs])
    if tput is None or not raw_tx:
        continue
    ratio = tput / raw_tx
    row(f"CreateOrder accepted/s ({conc} customers, no wait, {label})", num(tput, unit="/s"),
        num(raw_tx, unit=" tx/s raw"), f"{ratio:.2f}x", ">= 0.6x raw" if gated else "",
        ratio >= 0.6 if gated else None)
    row(f"  CreateOrder p50 / p99 ({label})",
        f"{med([d['create_order']['p50_ms'] for d in rs]):.1f} / {med([d['create_order']['p99_ms'] for d in rs]):.1f} ms",
        "", "", "", None)
    summary[f"{key}_per_s"] = round(tput, 1)
    summary[f"{key}_ratio"] = round(ratio, 3)
    per, total = cpu_per_order(rs[len(rs) // 2], "accepted")
    summary[f"{key}_cpu_ms"] = None if total is None else round(total, 2)
if raw_tx:
    summary["raw_tx_per_s"] = round(raw_tx, 1)

# Sustained end to end: the best closed-loop step.
best = load(f"closed-{best_n}.json") if best_n else None
if best:
    e2e = best["completed_per_s"]
    row(f"sustained end to end ({best_n} customers, closed)", num(e2e, unit="/s"), "", f"{e2e / 300:.2f}x of gate",
        ">= 300/s", e2e >= 300)
    row("  completion p50 / p99 at max", f"{best['completion']['p50_ms']:.0f} / {best['completion']['p99_ms']:.0f} ms",
        "", "", "", None)
    summary["sustained_orders_per_s"] = round(e2e, 1)
    summary["sustained_customers"] = best_n
steps = {}
for p in glob.glob(os.path.join(res, "closed-*.json")):
    d = load(os.path.basename(p))
    if d:
        steps[os.path.basename(p)[len("closed-"):-len(".json")]] = round(d["completed_per_s"], 1)
summary["closed_loop_steps"] = steps

opens = runs("open-*.json")
if opens:
    p99 = med([d["completion"]["p99_ms"] for d in opens])
    p50 = med([d["completion"]["p50_ms"] for d in opens])
    row(f"completion p99 at half max ({opens[0]['rate']:.1f}/s open)", num(p99, unit=" ms"), f"p50 {p50:.0f} ms",
        "", "<= 150 ms", p99 <= 150)
    row("  completed/s at half max", num(med([d["completed_per_s"] for d in opens]), unit="/s"), "", "", "", None)
    summary["completion_p99_half_ms"] = round(p99, 1)
    summary["completion_p50_half_ms"] = round(p50, 1)

# The scale line: the same closed loop with two instances of order-command
# and of every worker.
scale = runs("scale-*.json")
if scale and best:
    s = scale[0]["completed_per_s"]
    row(f"scale line: 2x order-command + workers ({best_n} customers)", num(s, unit="/s"),
        num(best["completed_per_s"], unit="/s one each"), f"{s / best['completed_per_s']:.2f}x", "", None)
    summary["scale_orders_per_s"] = round(s, 1)
    summary["scale_ratio"] = round(s / best["completed_per_s"], 3)
    summary["scale_cpu_ms_per_order"] = round(cpu_per_order(scale[0])[1] or 0, 2)

allruns = opens + nowait + alone + scale + runs("closed-*.json")
errs = sum(d["errors_total"] for d in allruns)
row("errors in all load runs", str(errs), "", "", "0", errs == 0)
summary["errors"] = errs
rc = load("reconcile.json")
summary["books_clean"] = bool(rc and rc.get("clean"))
findings = len((rc or {}).get("findings", []))
row("books (shopctl reconcile, whole stack)",
    "not checked" if rc is None else ("clean" if rc.get("clean") else f"NOT clean ({findings} findings)"), "", "",
    "clean", summary["books_clean"])


def table(header, body):
    w = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    print("  ".join(str(h).ljust(w[i]) for i, h in enumerate(header)).rstrip())
    for r in body:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip())


print()
table(("figure", "value", "baseline (same run)", "ratio", "gate", ""), rows)

# What one order costs, at the sustained maximum: counters over the
# measured window (MariaDB's global status, the programs' /metrics, CPU
# from /proc), per completed order, each beside its budget.
if best:
    costs = (best.get("costs") or {}).get("per_order") or {}
    per, total = cpu_per_order(best)
    crow = []
    names = {"statements": "SQL statements (Questions)", "commits": "commits", "fsyncs": "InnoDB data fsyncs",
             "kafka_requests": "Kafka requests (all clients)", "events_published": "events published",
             "events_consumed": "events consumed"}
    for k, label in names.items():
        v = costs.get(k)
        bud, was = BUDGET[k]
        crow.append((label, num(v, "{:.2f}"), f"<= {bud}", "-" if was is None else f"{was}",
                     "" if v is None else ("ok" if v <= bud else "OVER")))
        summary[f"{k}_per_order"] = None if v is None else round(v, 2)
    for k in ("selects", "inserts", "updates", "deletes", "log_writes", "kafka_fetches", "kafka_produces"):
        if costs.get(k) is not None:
            crow.append(("  " + k.replace("_", " "), num(costs[k], "{:.2f}"), "", "", ""))
            summary[f"{k}_per_order"] = round(costs[k], 2)
    for prog in sorted(per, key=lambda p: -per[p]):
        bud = CPU_BUDGET.get(prog)
        crow.append((f"CPU ms, {prog}", f"{per[prog]:.2f}", "-" if bud is None else f"<= {bud}", "",
                     "" if bud is None else ("ok" if per[prog] <= bud else "OVER")))
    crow.append(("CPU ms, all processes", num(total, "{:.2f}"), f"<= {CPU_GATE}", f"{CPU_WAS}",
                 "" if total is None else ("ok" if total <= CPU_GATE else "OVER")))
    summary["cpu_ms_per_order"] = None if total is None else round(total, 2)
    summary["cpu_ms_per_order_by_process"] = {k: round(v, 3) for k, v in per.items()}
    print()
    print(f"what one completed order costs at the sustained maximum ({best_n} customers, "
          f"{best.get('window_s', 0):.0f} s window, {best.get('completed', 0)} orders)")
    table(("per completed order", "now", "budget", "was (first plan)", ""), crow)
    if not (best.get("costs") or {}).get("db_ok", False):
        print("  (MariaDB's status could not be read: the statement figures are missing)")

with open(out_path, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"\n(the figures above, as JSON: {out_path})")
