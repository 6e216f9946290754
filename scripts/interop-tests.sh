#!/usr/bin/env bash
# Starts `rpcbench serve` on a free port and runs the Python interop client's tests
# (Tests/interop) against it; the client's own unit tests run too, and the hostile-client
# tests (test_hostile.py), which start servers of their own from SWIFTRPC_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product rpcbench >/dev/null
bin=$(swift build --show-bin-path)/rpcbench
log=$(mktemp)
"$bin" serve --port 0 --loops 2 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "^listening on " "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$log")
if [ -z "$addr" ]; then
  echo "interop: the server did not start:"; cat "$log"; exit 1
fi
SWIFTRPC_ADDR=$addr SWIFTRPC_BIN=$bin python3 -m pytest -q Tests/interop
kill -0 $pid || { echo "interop: the server died during the tests"; exit 1; }
