#!/usr/bin/env bash
# Regenerates docs/BENCHMARKS.md: W1, W2 and W3 from design.md, measured in one run for
#   floor        Benchmarks/floor/echo_floor.c: bare C io_uring echo of the same framing
#   crpc (C)     the core alone through crpc.h (crpc-cbench)
#   SwiftRPC     rpcbench's Swift client: callback API, async API on the global executor,
#                async API from tasks on the client's event loop
#   ... epoll    the C core and the Swift callback API again, server and client forced to
#                the epoll backend (SWIFTRPC_BACKEND=epoll), the fallback where io_uring
#                is refused; the rows without the suffix run on io_uring
#   await floor  `rpcbench await-floor`: the concurrency runtime's own CPU cost per awaited
#                call, no I/O, on either executor; with the callback API's CPU per W2 call
#                it bounds what the async API can reach
# Release builds; server and client are separate processes pinned to CPU 0 and CPU 1.
# Each (implementation, workload) runs REPS times, interleaved round by round so a noisy
# stretch of a shared machine hits every implementation alike; the median run is kept.
# Usage: scripts/benchmarks.sh [seconds per run, default 5] [repetitions, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
reps=${2:-3}
out=.build/bench
mkdir -p "$out"
swift build -c release --product rpcbench >/dev/null
swift build -c release --product crpc-cbench >/dev/null
bin=$(swift build -c release --show-bin-path)
gcc -O2 -std=gnu11 -o "$out/echo_floor" Benchmarks/floor/echo_floor.c -luring -lpthread

results="$out/results.jsonl"
: >"$results"

# start_server CMD...: runs the server, waits for "listening on H:P", sets $pid and $port.
start_server() {
  "$@" >"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$out/server.log" && break; sleep 0.1; done
  port=$(sed -n 's/.*listening on [^:]*:\([0-9]*\).*/\1/p' "$out/server.log" | head -1)
  [ -n "$port" ] || { echo "server did not start: $*"; cat "$out/server.log"; exit 1; }
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

# tag: python adds the implementation and workload names to each JSON result.
tag() { python3 -c 'import json,sys; impl,wl=sys.argv[1:3]
d=json.loads(sys.stdin.read())
for r in (d if isinstance(d,list) else [d]):
    r["impl"]=impl; r["wl"]=wl; print(json.dumps(r))' "$1" "$2" >>"$results"; }

workloads=("W1 1 1 32" "W2 4 32 32" "W3 1 4 65536")

# run_crpc NAME: the C core (crpc-cbench) through every workload.
run_crpc() {
  local name=$1 w
  start_server "$bin/crpc-cbench" serve --port 0 --loops 1 --cpu 0
  for w in "${workloads[@]}"; do set -- $w
    "$bin/crpc-cbench" load --port "$port" --conns "$2" --depth "$3" --payload "$4" --duration "$secs" --cpu 1 --json | tag "$name" "$1"
  done
  stop_server
}

# run_swift SUFFIX API...: rpcbench's Swift client through every workload, once per API.
run_swift() {
  local suffix=$1 w api; shift
  local apis=("$@")
  start_server "$bin/rpcbench" serve --port 0 --loops 1 --cpu 0
  for w in "${workloads[@]}"; do set -- $w
    for api in "${apis[@]}"; do
      "$bin/rpcbench" load --target "127.0.0.1:$port" --conns "$2" --depth "$3" --payload "$4" \
        --duration "$secs" --cpu 1 --api "$api" --json | tag "SwiftRPC $api$suffix" "$1"
    done
  done
  stop_server
}

for round in $(seq "$reps"); do
  echo "round $round of $reps"
  start_server taskset -c 0 "$out/echo_floor" serve --port 0 --cpu 0
  for w in "${workloads[@]}"; do set -- $w
    "$out/echo_floor" load --port "$port" --conns "$2" --depth "$3" --payload "$4" --duration "$secs" --cpu 1 --json | tag floor "$1"
  done
  stop_server

  run_crpc "crpc (C)"
  run_swift "" callback async async-loop
  for executor in loop global; do
    "$bin/rpcbench" await-floor --executor "$executor" --duration "$secs" --cpu 1 --json | tag "await floor" "$executor"
  done

  export SWIFTRPC_BACKEND=epoll
  run_crpc "crpc (C) epoll"
  run_swift " epoll" callback
  unset SWIFTRPC_BACKEND
done

python3 scripts/render_benchmarks.py "$results" "$secs" "$reps" >docs/BENCHMARKS.md
{ echo; echo "## Allocations per call"; echo; python3 scripts/alloc_per_call.py 1 3; } >>docs/BENCHMARKS.md
scripts/transport-benchmarks.sh "$bin/rpcbench" "$secs" "$reps" >>docs/BENCHMARKS.md
{ echo; scripts/stream-benchmarks.sh "$bin/rpcbench" "$secs" "$reps"; } >>docs/BENCHMARKS.md
echo "wrote docs/BENCHMARKS.md"
