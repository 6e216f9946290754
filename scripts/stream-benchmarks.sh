#!/usr/bin/env bash
# The stream workloads (W4 server stream, W5 client stream, bidi echo, W6 slow consumer,
# head-of-line) next to the calls they are judged against (W1, W2, W3), from one server:
# REPS rounds of `rpcbench suite --apis callback --transports tcp`, each round measuring
# every workload; prints a Markdown section with the medians and the median of each
# round's ratios (scripts/benchmarks.sh appends it to docs/BENCHMARKS.md).
# Usage: scripts/stream-benchmarks.sh [RPCBENCH] [SECONDS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.build/release/rpcbench}
secs=${2:-4}
reps=${3:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$reps"); do
  "$bin" suite --apis callback --transports tcp --workloads w1,w2,w3,w4,w5,bidi,w6,hol \
    --duration "$secs" --warmup 1 --json >"$out/round$r.json" 2>"$out/round$r.err" || {
    cat "$out/round$r.err" >&2; exit 1; }
done
python3 - "$out" "$reps" "$secs" <<'PY'
import json, statistics, sys, glob
out, reps, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rounds = [json.load(open(f)) for f in sorted(glob.glob(out + "/round*.json"))]
def call(r, prefix):
    return next(x for x in r["results"] if x["workload"].startswith(prefix))
def stream(r, prefix):
    return next(x for x in r["streams"] if x["workload"].startswith(prefix))
med = statistics.median
ratios = {
    "W4 elements/s / W2 calls/s": [stream(r, "W4")["elements_per_sec"] / call(r, "W2")["calls_per_sec"] for r in rounds],
    "W5 MB/s / W3 MB/s (one way)": [stream(r, "W5")["mb_per_sec"] / (call(r, "W3")["mb_per_sec"] / 2) for r in rounds],
    "W6 consumer slowdown (producer alone / slow consumer)":
        [stream(r, "W6 producer")["elements_per_sec"] / stream(r, "W6 slow")["elements_per_sec"] for r in rounds],
    "W1 p99 beside a W5 upload / W1 p99 alone": [call(r, "W1 beside")["p99_us"] / [x for x in r["results"] if x["workload"] == "W1 ping-pong"][-1]["p99_us"] for r in rounds],
}
print("## Streams")
print()
print(f"`scripts/stream-benchmarks.sh` ({reps} rounds of `rpcbench suite --apis callback --transports tcp "
      f"--workloads w1,w2,w3,w4,w5,bidi,w6,hol --duration {secs}`, release build, server on CPU 0 and "
      "client on CPU 1, one connection per stream, the reference streams running on their loops, "
      "the client's stream task on its loop, SwiftRPC's default window of 256 elements / 256 KiB). "
      "Medians of the rounds; each ratio is the median of the rounds' own ratios.")
print()
print("| workload | elements/s | MB/s |")
print("| --- | ---: | ---: |")
for name in ["W4", "W5", "bidi", "W6 producer", "W6 slow"]:
    rows = [stream(r, name) for r in rounds]
    print(f"| {rows[0]['workload']} ({rows[0]['payload']} B) | {med(x['elements_per_sec'] for x in rows):,.0f} | {med(x['mb_per_sec'] for x in rows):,.1f} |")
for name in ["W1 ping-pong", "W2", "W3"]:
    rows = [call(r, name) for r in rounds]
    print(f"| {rows[0]['workload']} (calls) | {med(x['calls_per_sec'] for x in rows):,.0f} calls/s | {med(x['mb_per_sec'] for x in rows):,.1f} |")
print()
print("| ratio | median | rounds |")
print("| --- | ---: | --- |")
for k, v in ratios.items():
    print(f"| {k} | {med(v):.2f}x | {', '.join(f'{x:.2f}' for x in v)} |")
print()
w6 = [stream(r, "W6 slow") for r in rounds]
print("W6 resident memory over its 10 s window (KiB, start / end / peak, per round): client "
      + "; ".join(f"{x['client_rss_start_kib']} / {x['client_rss_end_kib']} / {x['client_rss_peak_kib']}" for x in w6)
      + "; server " + "; ".join(f"{x['server_rss_start_kib']} / {x['server_rss_end_kib']} / {x['server_rss_peak_kib']}" for x in w6) + ".")
PY
