#!/usr/bin/env bash
# Soak: several million calls through a release build, every reply verified (payload
# equality, rpcbench's own check), nothing lost (no call left in flight when the run ends)
# and nothing duplicated (the callback engine re-issues a slot only when its call ends, and
# counts every completion: calls == completions). Exit 1 on any error or mismatch.
# Usage: scripts/soak.sh [seconds, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
swift build -c release --product rpcbench >/dev/null
bin=$(swift build -c release --show-bin-path)/rpcbench
log=$(mktemp)
"$bin" serve --port 0 --loops 2 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -f "$log" "$log.json"' EXIT
for _ in $(seq 100); do grep -q "^listening on " "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$log")
"$bin" load --target "$addr" --conns 8 --depth 64 --payload 100 --duration "$secs" --warmup 1 --json >"$log.json"
python3 - "$log.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
calls, errors, mismatches, left = r["calls"], r["errors"], r["mismatches"], r["left_in_flight"]
print(f"soak: {calls:,} calls verified, {errors} errors, {mismatches} mismatches, {left} left in flight, "
      f"{r['calls_per_sec']:,.0f} calls/s")
sys.exit(0 if calls >= 1_000_000 and errors == 0 and mismatches == 0 and left == 0 else 1)
PY
