#!/usr/bin/env bash
# A/B of two builds on this machine, interleaved round by round (a noisy stretch hits both
# alike), medians kept: the C core (crpc-cbench) on io_uring W1-W3 and epoll W3, the Swift
# callback API (rpcbench load) W1-W3, and a C client against `rpcbench serve` (the
# server's own speed) on W2. Release builds; server on CPU 0, client on CPU 1.
#   git worktree add /tmp/before REV && (cd /tmp/before && swift build -c release --product rpcbench \
#     && swift build -c release --product crpc-cbench)
#   scripts/ab-bench.sh /tmp/before/.build/release .build/release [seconds 3] [rounds 3]
# ONLY_W23=1 skips W1. Prints a markdown table; the runs are in .build/ab/results.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; secs=${3:-3}; reps=${4:-3}
out=.build/ab; mkdir -p $out; : > $out/results.jsonl
start_server() { "$@" >"$out/server.log" 2>&1 & pid=$!; for _ in $(seq 100); do grep -q "listening on" "$out/server.log" && break; sleep 0.1; done
  port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$out/server.log" | head -1); }
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
tag() { python3 -c 'import json,sys; v,impl,wl=sys.argv[1:4]
d=json.loads(sys.stdin.read())
for r in (d if isinstance(d,list) else [d]):
    r["ver"]=v; r["impl"]=impl; r["wl"]=wl; print(json.dumps(r))' "$1" "$2" "$3" >>$out/results.jsonl; }
workloads=("W1 1 1 32" "W2 4 32 32" "W3 1 4 65536")
[ -n "${ONLY_W23:-}" ] && workloads=("W2 4 32 32" "W3 1 4 65536")
for round in $(seq $reps); do
  for ver in before after; do
    bin=$A; [ $ver = after ] && bin=$B
    for be in uring epoll; do
      export SWIFTRPC_BACKEND=$be
      start_server "$bin/crpc-cbench" serve --port 0 --loops 1 --cpu 0
      for w in "${workloads[@]}"; do set -- $w
        [ $be = epoll ] && [ $1 != W3 ] && continue
        "$bin/crpc-cbench" load --port "$port" --conns "$2" --depth "$3" --payload "$4" --duration "$secs" --cpu 1 --json | tag $ver "C $be" "$1"
      done
      stop_server
      [ $be = epoll ] && continue
      start_server "$bin/rpcbench" serve --port 0 --loops 1 --cpu 0
      for w in "${workloads[@]}"; do set -- $w
        "$bin/rpcbench" load --target "127.0.0.1:$port" --conns "$2" --depth "$3" --payload "$4" --duration "$secs" --cpu 1 --api callback --json | tag $ver "Swift callback" "$1"
      done
      stop_server
      # a C client against the Swift server: the server's own speed
      start_server "$bin/rpcbench" serve --port 0 --loops 1 --cpu 0
      "$bin/crpc-cbench" load --port "$port" --conns 4 --depth 32 --payload 32 --duration "$secs" --cpu 1 --json | tag $ver "C client -> rpcbench serve" W2
      stop_server
    done
    unset SWIFTRPC_BACKEND
  done
done
python3 - <<'PY'
import json, statistics, collections
rows = [json.loads(l) for l in open(".build/ab/results.jsonl")]
g = collections.defaultdict(list)
for r in rows:
    g[(r["impl"], r["wl"], r["ver"])].append(r)
def rate(r):
    for k in ("calls_per_sec", "calls_per_s", "rate", "throughput"):
        if k in r: return r[k]
    return r.get("calls", 0) / r.get("seconds", r.get("duration", 1))
keys = sorted({(i, w) for i, w, _ in g})
print("| implementation | workload | before calls/s | after calls/s | after/before | before p50 us | after p50 us |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for i, w in keys:
    b, a = g.get((i, w, "before"), []), g.get((i, w, "after"), [])
    if not a or not b: continue
    rb = statistics.median(rate(r) for r in b); ra = statistics.median(rate(r) for r in a)
    pb = statistics.median(r.get("p50_us", 0) for r in b); pa = statistics.median(r.get("p50_us", 0) for r in a)
    print(f"| {i} | {w} | {rb:,.0f} | {ra:,.0f} | {ra/rb:.2f} | {pb:.1f} | {pa:.1f} |")
PY
