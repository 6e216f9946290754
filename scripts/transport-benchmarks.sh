#!/usr/bin/env bash
# The transports section of docs/BENCHMARKS.md (scripts/benchmarks.sh appends it): W1-W3
# over plaintext TCP, TLS 1.3 and a Unix socket, measured back to back in each of REPS
# rounds by `rpcbench suite` (callback API), then the median ratio to TCP of each; the
# server's memory per TLS connection (scripts/tls_memory.py) and full handshakes per
# second on one loop (scripts/tls_handshakes.py).
#
#   scripts/transport-benchmarks.sh RPCBENCH [SECONDS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 secs=${2:-5} reps=${3:-3}
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$reps"); do
  "$bin" suite --apis callback --duration "$secs" --json >>"$runs"
done
python3 - "$runs" "$reps" <<'PY'
import json, statistics, sys
text = open(sys.argv[1]).read()
rounds, dec, pos = [], json.JSONDecoder(), 0
while pos < len(text):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    value, pos = dec.raw_decode(text, pos)
    rounds.append(value)
print("\n## Transports: TLS 1.3 and Unix sockets\n")
print(f"`rpcbench suite --apis callback` ({sys.argv[2]} rounds; in each, every workload over TCP, TLS and a Unix")
print("socket back to back): medians, and the median of the rounds' ratios to TCP. TLS: TLS 1.3,")
print("ECDSA P-256 server certificate, OpenSSL 3 in user space (no kernel TLS on this kernel).\n")
print("| workload | transport | calls/s | p50 µs | p99 µs | calls/s vs TCP | p50 vs TCP |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
def split(row):
    name = row["workload"]
    for t in ("tls", "unix"):
        if name.endswith(f" [{t}]"):
            return name[: -len(t) - 3], t
    return name, "tcp"
table = {}
for r in rounds:
    by = {split(row): row for row in r}
    for (wl, t), row in by.items():
        base = by.get((wl, "tcp"))
        entry = table.setdefault((wl, t), {"rate": [], "p50": [], "p99": [], "rr": [], "pr": []})
        entry["rate"].append(row["calls_per_sec"]); entry["p50"].append(row["p50_us"]); entry["p99"].append(row["p99_us"])
        if base and base["calls_per_sec"] and base["p50_us"]:
            entry["rr"].append(row["calls_per_sec"] / base["calls_per_sec"]); entry["pr"].append(row["p50_us"] / base["p50_us"])
for (wl, t) in sorted(table, key=lambda k: (k[0], ["tcp", "tls", "unix"].index(k[1]))):
    e = table[(wl, t)]
    m = statistics.median
    print(f"| {wl.split()[0]} | {t} | {m(e['rate']):,.0f} | {m(e['p50']):.1f} | {m(e['p99']):.1f} | "
          f"{m(e['rr']):.2f}x | {m(e['pr']):.2f}x |")
PY
echo
echo '```'
python3 scripts/tls_memory.py --bin "$bin"
python3 scripts/tls_handshakes.py --bin "$bin" --duration "$secs"
echo '```'
