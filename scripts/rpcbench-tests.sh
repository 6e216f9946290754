#!/usr/bin/env bash
# Tests rpcbench itself: every reply is verified (a server that corrupts echoes makes
# `rpcbench load` count mismatches and exit 1), a clean run exits 0 with no errors, the
# open-loop mode and the suite's child-server plumbing work, --cpu pins every thread,
# payloads up to the frame limit pass and larger ones fail, SIGINT stops load (reporting
# what it measured), serve and the suite (and the suite's child server), await-floor ends
# and counts, and --help shows defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
swift build --product rpcbench >/dev/null || exit 1
bin=$(swift build --show-bin-path)/rpcbench
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }

serve() {  # serve LOG ARGS...: starts a server, sets $pid and $addr
  local log=$1; shift
  "$bin" serve --port 0 "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "^listening on " "$log" && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on //p' "$log")
}

tmp=$(mktemp -d)
method_echo=Bench.Echo
etcd_pid= lpid= spid= child=
trap 'kill $pid $lpid $spid $child 2>/dev/null; [ -n "$etcd_pid" ] && kill $etcd_pid 2>/dev/null; rm -rf "$tmp"' EXIT

serve "$tmp/bad.log" --corrupt-echo
"$bin" load --target "$addr" --conns 2 --depth 4 --duration 0.5 --warmup 0.1 --json >"$tmp/bad.json"
rc=$?
check "corrupted echoes make the exit status 1" "[ $rc -eq 1 ]"
check "corrupted echoes are counted as mismatches" \
  "python3 -c 'import json,sys; r=json.load(open(\"$tmp/bad.json\"))[0]; sys.exit(0 if r[\"mismatches\"] > 0 and r[\"mismatches\"] == r[\"calls\"] else 1)'"
check "corrupted echoes during warm-up are counted too" \
  "python3 -c 'import json,sys; r=json.load(open(\"$tmp/bad.json\"))[0]; sys.exit(0 if r[\"unmeasured_failures\"] > 0 else 1)'"
kill $pid; wait $pid 2>/dev/null

serve "$tmp/good.log"
"$bin" load --target "$addr" --conns 2 --depth 8 --payload 1000 --duration 0.5 --warmup 0.1 --json >"$tmp/good.json"
check "a clean run exits 0" "[ $? -eq 0 ]"
check "a clean run has calls and no errors" \
  "python3 -c 'import json,sys; r=json.load(open(\"$tmp/good.json\"))[0]; sys.exit(0 if r[\"calls\"] > 0 and r[\"errors\"] == 0 and r[\"mismatches\"] == 0 and r[\"unmeasured_failures\"] == 0 and r[\"left_in_flight\"] == 0 else 1)'"
"$bin" load --target "$addr" --rate 2000 --duration 0.5 --warmup 0.1 --api async --json >"$tmp/rate.json"
check "an open-loop async run exits 0" "[ $? -eq 0 ]"
check "the open loop offers about the rate asked for" \
  "python3 -c 'import json,sys; r=json.load(open(\"$tmp/rate.json\"))[0]; sys.exit(0 if 700 <= r[\"calls\"] <= 1300 else 1)'"
"$bin" load --target "$addr" --payload 0 --conns 1 --depth 1 --duration 0.3 --warmup 0.1 --api async-loop >/dev/null
check "empty payloads and the loop executor work" "[ $? -eq 0 ]"
# The stream workloads: every element checked (Bench.Stream's indices, the upload's count,
# the echoes), none lost.
for kind in server client bidi; do
  "$bin" load --target "$addr" --stream $kind --payload 100 --duration 0.5 --warmup 0.1 --json >"$tmp/stream-$kind.json"
  check "load --stream $kind exits 0" "[ $? -eq 0 ]"
  check "load --stream $kind moves elements, all of them right" \
    "python3 -c 'import json,sys; r=json.load(open(\"$tmp/stream-$kind.json\"))[0]; sys.exit(0 if r[\"elements\"] > 0 and r[\"errors\"] == 0 and r[\"mismatches\"] == 0 else 1)'"
done

# --cpu pins every thread of the client, and SIGINT stops load: it prints what it measured
# so far, marked as interrupted, then dies of the signal, so the shell sees 130
# (interrupted, never a pass). The run is 30 s long so an ignored SIGINT shows up as a
# wrong status, not as a race. `env --default-signal` because bash starts background jobs
# with SIGINT ignored. The CPU is the first this script may use: 0, unless a cpuset leaves
# it out.
read -r first_cpu ncpus < <(python3 -c 'import os; s=os.sched_getaffinity(0); print(min(s), len(s))')
env --default-signal=INT "$bin" load --target "$addr" --cpu $first_cpu --conns 1 --depth 4 --duration 30 --warmup 0.1 \
  --json >"$tmp/int.json" 2>"$tmp/int.err" &
lpid=$!
# The backend line comes from the client's loop, which starts after the pinning.
for _ in $(seq 100); do grep -q '^crpc: I/O backend' "$tmp/int.err" && break; sleep 0.1; done
if [ "$ncpus" -ge 2 ]; then
  cat /proc/$lpid/task/*/status 2>/dev/null | sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' >"$tmp/cpus.txt"
  check "load --cpu $first_cpu pins every thread to CPU $first_cpu" \
    "[ \$(wc -l <'$tmp/cpus.txt') -ge 2 ] && [ \"\$(sort -u '$tmp/cpus.txt')\" = $first_cpu ]"
else
  echo "SKIP: one CPU here, so pinned and unpinned look alike; load --cpu affinity not checked"
fi
sleep 0.5 # into the measured window
kill -INT $lpid; wait $lpid
rc=$? lpid=
check "load stops on SIGINT with status 130" "[ $rc -eq 130 ]"
check "load reports what it measured before SIGINT, marked as interrupted" \
  "python3 -c 'import json,sys; r=json.load(open(\"$tmp/int.json\"))[0]; sys.exit(0 if r[\"interrupted\"] and r[\"calls\"] > 0 and 0 < r[\"seconds\"] < 30 and r[\"errors\"] == 0 else 1)'"
env --default-signal=INT "$bin" load --target "$addr" --conns 1 --depth 4 --duration 30 --warmup 30 \
  >"$tmp/int.txt" 2>"$tmp/int.err" &
lpid=$!
for _ in $(seq 100); do grep -q '^crpc: I/O backend' "$tmp/int.err" && break; sleep 0.1; done
kill -TERM $lpid; wait $lpid
rc=$? lpid=
check "SIGTERM during warm-up: status 143, and it says nothing was measured" \
  "[ $rc -eq 143 ] && [ ! -s '$tmp/int.txt' ] && grep -q 'interrupted during warm-up: nothing was measured' '$tmp/int.err'"
# A second SIGINT ends load at once, even while it waits for calls a stopped server never
# answers (the drain would wait 10 s).
env --default-signal=INT "$bin" load --target "$addr" --conns 1 --depth 4 --duration 30 --warmup 0.1 \
  >/dev/null 2>"$tmp/int.err" &
lpid=$!
for _ in $(seq 100); do grep -q '^crpc: I/O backend' "$tmp/int.err" && break; sleep 0.1; done
sleep 0.3
kill -STOP $pid; kill -INT $lpid; sleep 0.3
started=$(date +%s%N); kill -INT $lpid; wait $lpid
rc=$? lpid=; took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
kill -CONT $pid
check "a second SIGINT ends load at once (status 130, ${took_ms} ms)" "[ $rc -eq 130 ] && [ $took_ms -lt 3000 ]"
"$bin" load --target "$addr" --cpu 4096 --duration 0.3 --warmup 0.1 >/dev/null 2>"$tmp/cpu.err"
check "load --cpu 4096 fails and says why" "[ $? -ne 0 ] && grep -q 'cannot pin to CPU 4096' '$tmp/cpu.err'"

# The payload limit: a request frame holds the payload and its envelope (at most 18 bytes
# besides the method name: array, type, a 5-byte msgid, str and params headers, a bin32
# header) in the default max frame size, 4 MiB (CRPC_DEFAULT_MAX_FRAME_SIZE, include/crpc.h).
max_payload=$(((4 << 20) - 18 - ${#method_echo}))
"$bin" load --target "$addr" --payload $max_payload --conns 1 --depth 1 --duration 0.2 --warmup 0.1 --json >"$tmp/maxp.json"
check "the largest payload load allows ($max_payload bytes) is echoed intact" \
  "[ $? -eq 0 ] && python3 -c 'import json,sys; r=json.load(open(\"$tmp/maxp.json\"))[0]; sys.exit(0 if r[\"calls\"] > 0 and r[\"errors\"] == 0 and r[\"mismatches\"] == 0 else 1)'"
"$bin" load --target "$addr" --payload $((max_payload + 1)) --conns 1 --depth 1 --duration 0.2 --warmup 0.1 --json \
  >"$tmp/overp.json" 2>"$tmp/overp.err"
check "one byte more is refused up front, saying why" \
  "[ $? -ne 0 ] && [ ! -s '$tmp/overp.json' ] && grep -q 'payload is at most $max_payload bytes' '$tmp/overp.err'"
first=$pid first_addr=$addr
serve "$tmp/second.log"
"$bin" load --service Bench --servers "$first_addr,$addr" --conns 1 --depth 4 --duration 0.5 --warmup 0.1 --json >"$tmp/cluster.json"
check "load --service over a static list exits 0" "[ $? -eq 0 ]"
check "load --service reports both servers, each with calls, and no errors" \
  "python3 -c 'import json,sys; d=json.load(open(\"$tmp/cluster.json\")); s=d[\"servers\"]; r=d[\"results\"][0]; sys.exit(0 if len(s) == 2 and all(x[\"calls\"] > 0 and x[\"failed\"] == 0 for x in s) and r[\"errors\"] == 0 else 1)'"
kill -INT $pid; wait $pid 2>/dev/null
check "serve exits 0 on SIGINT (Ctrl-C), as on SIGTERM" "[ $? -eq 0 ]"
pid=$first addr=$first_addr
"$bin" stats --target "$addr" >"$tmp/stats.txt"
check "stats prints the per-method table" \
  "[ $? -eq 0 ] && head -1 '$tmp/stats.txt' | grep -q '^method *calls *errors' && grep -Eq '^Bench.Echo +[1-9][0-9]* +0 +-' '$tmp/stats.txt'"
"$bin" stats --target "$addr" --json >"$tmp/stats.json"
check "stats --json counts the load's calls" \
  "python3 -c 'import json,sys; r={x[\"method\"]: x for x in json.load(open(\"$tmp/stats.json\"))}; sys.exit(0 if r[\"Bench.Echo\"][\"calls\"] > 0 and r[\"Arith.Multiply\"][\"calls\"] == 0 else 1)'"
kill -TERM $pid; wait $pid 2>/dev/null
check "serve exits 0 on SIGTERM (a clean shutdown, not death by signal)" "[ $? -eq 0 ]"

# Discovery through a real etcd on loopback: two servers registered under leases, a load by
# service name reaching both, and a server stopped with SIGTERM leaving the list at once
# (its lease revoked, not expired: the TTL is 30 s). Skipped, saying so, without etcd.
etcd_bin=$(command -v etcd || true)
if [ -z "$etcd_bin" ]; then
  echo "SKIP: etcd is not installed (scripts/install-deps.sh installs etcd-server); load --service --etcd not run"
else
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  cport=$(free_port) pport=$(free_port)
  etcd_url="http://127.0.0.1:$cport" peer="http://127.0.0.1:$pport"
  "$etcd_bin" --name rbt --data-dir "$tmp/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" --initial-cluster "rbt=$peer" \
    --log-level error >"$tmp/etcd.log" 2>&1 &
  etcd_pid=$!
  health() { python3 -c 'import sys, urllib.request; sys.exit(0 if b"true" in urllib.request.urlopen(sys.argv[1] + "/health", timeout=1).read() else 1)' "$etcd_url" 2>/dev/null; }
  for _ in $(seq 100); do health && break; sleep 0.1; done
  serve "$tmp/reg1.log" --register Bench --etcd "$etcd_url" --ttl 30
  reg1=$pid
  serve "$tmp/reg2.log" --register Bench --etcd "$etcd_url" --ttl 30
  reg2=$pid
  "$bin" load --service Bench --etcd "$etcd_url" --conns 1 --depth 4 --duration 0.5 --warmup 0.2 --json >"$tmp/etcd1.json"
  check "load --service --etcd exits 0" "[ $? -eq 0 ]"
  check "load --service --etcd reaches both registered servers" \
    "python3 -c 'import json,sys; s=json.load(open(\"$tmp/etcd1.json\"))[\"servers\"]; sys.exit(0 if len(s) == 2 and all(x[\"calls\"] > 0 for x in s) else 1)'"
  kill -TERM $reg1; wait $reg1 2>/dev/null
  "$bin" load --service Bench --etcd "$etcd_url" --conns 1 --depth 4 --duration 0.3 --warmup 0.1 --json >"$tmp/etcd2.json"
  check "a server stopped with SIGTERM is gone from etcd at once" \
    "python3 -c 'import json,sys; s=json.load(open(\"$tmp/etcd2.json\"))[\"servers\"]; sys.exit(0 if len(s) == 1 and s[0][\"calls\"] > 0 else 1)'"
  pid=$reg2
  kill -TERM $reg2; wait $reg2 2>/dev/null
  kill $etcd_pid; wait $etcd_pid 2>/dev/null; etcd_pid=
fi

# Servers of that shape started by anything else on the machine are there before and after.
servers() { pgrep -f 'rpcbench serve --port 0 --loops 1' | sort | tr '\n' ' '; }
before=$(servers)
"$bin" suite --workloads w1 --apis callback --duration 0.3 --warmup 0.1 >"$tmp/suite.txt"
check "the suite runs against its own child server" "[ $? -eq 0 ] && grep -q 'W1 ping-pong' '$tmp/suite.txt'"
check "no child server is left behind" "[ \"$(servers)\" = \"$before\" ]"
# The suite interrupted with SIGINT takes its child server with it. The child runs in its
# own process group, so a terminal's Ctrl-C reaches only the suite: the suite must stop it.
env --default-signal=INT "$bin" suite --workloads w1 --apis callback --duration 30 --warmup 0.1 >/dev/null 2>&1 &
spid=$!
child=
for _ in $(seq 100); do child=$(pgrep -P $spid -f 'rpcbench serve'); [ -n "$child" ] && break; sleep 0.1; done
sleep 0.5 # past the child's start, into the run (either way the child must go)
kill -INT $spid; wait $spid
rc=$? spid=
check "the suite stops on SIGINT with a non-zero status" "[ $rc -ne 0 ]"
alive() { local s; s=$(ps -o stat= -p "$1") && [ "${s#Z}" = "$s" ]; } # a zombie waiting for init is gone
for _ in $(seq 50); do [ -n "$child" ] && alive $child || break; sleep 0.1; done
check "the suite's child server is gone after SIGINT" "[ -n '$child' ] && ! alive $child"
[ -n "$child" ] && kill $child 2>/dev/null; child=
# await-floor: every task keeps awaiting (the batch rendezvous never stalls, even with a
# single task, which resumes itself) and the run ends by itself, on both executors.
for executor in loop global; do
  for tasks in 1 64; do
    timeout 30 "$bin" await-floor --executor $executor --tasks $tasks --duration 0.3 --warmup 0.1 --json \
      >"$tmp/floor.json" 2>/dev/null
    check "await-floor on the $executor executor with $tasks task(s) ends and counts awaits" \
      "[ $? -eq 0 ] && python3 -c 'import json,sys; r=json.load(open(\"$tmp/floor.json\")); sys.exit(0 if r[\"awaits_per_sec\"] > 0 and r[\"cpu_ns_per_await\"] > 0 else 1)'"
  done
done
"$bin" await-floor --tasks 0 >/dev/null 2>"$tmp/floor.err"
check "await-floor --tasks 0 is refused, saying why" "[ $? -ne 0 ] && grep -q 'tasks must be at least 1' '$tmp/floor.err'"
"$bin" load --help >"$tmp/help.txt"
check "--help shows examples and defaults" "grep -q 'Examples' '$tmp/help.txt' && grep -q 'default: 32' '$tmp/help.txt'"

echo "rpcbench-tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
