#!/usr/bin/env python3
"""Heap allocations per call, client and server side, for each client API.

Runs `rpcbench serve` and `rpcbench load` (release builds) with the LD_PRELOAD counter
Benchmarks/alloc-count/alloc_count.c, twice per case with different durations, and
reports (allocations(long) - allocations(short)) / (calls(long) - calls(short)), which
cancels start-up and shutdown costs.

Usage: scripts/alloc_per_call.py [short_seconds long_seconds]   (after swift build -c release)
"""
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                     capture_output=True, text=True, check=True).stdout.strip()
SHIM = os.path.join(ROOT, ".build", "alloc_count.so")
COUNT = re.compile(r"alloc-count: (\d+) allocations")


def build_shim():
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", SHIM,
                    os.path.join(ROOT, "Benchmarks/alloc-count/alloc_count.c")], check=True)


def run_case(api, conns, depth, seconds):
    env = dict(os.environ, LD_PRELOAD=SHIM)
    server = subprocess.Popen([f"{BIN}/rpcbench", "serve", "--port", "0", "--loops", "1", "--cpu", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = server.stdout.readline()
    port = line.strip().rsplit(":", 1)[1]
    load = subprocess.run([f"{BIN}/rpcbench", "load", "--target", f"127.0.0.1:{port}", "--conns", str(conns),
                           "--depth", str(depth), "--payload", "32", "--duration", str(seconds),
                           "--warmup", "0.2", "--cpu", "1", "--api", api, "--json"],
                          capture_output=True, text=True, env=env)
    server.terminate()
    _, server_err = server.communicate(timeout=30)
    result = json.loads(load.stdout)[0]
    # Every call in flight at the end still completed (and allocated), so count them all:
    # the engine records calls in the measured window; scale by completions instead.
    client_allocs = int(COUNT.findall(load.stderr)[-1])
    server_allocs = int(COUNT.findall(server_err)[-1])
    return result["calls"], client_allocs, server_allocs


def main():
    short, long = (float(sys.argv[1]), float(sys.argv[2])) if len(sys.argv) > 2 else (1.0, 3.0)
    build_shim()
    print("Heap allocations per call, counted by `Benchmarks/alloc-count/alloc_count.c` (an LD_PRELOAD")
    print("shim counting malloc/calloc/realloc/memalign) in `rpcbench load` and `rpcbench serve`, as")
    print(f"(allocations of a {long:g} s run - allocations of a {short:g} s run) / (calls of the first -")
    print("calls of the second), which cancels start-up and shutdown. Bench.Echo with 32-byte payloads;")
    print("the server answers it inline from the request's bytes. Command: `scripts/alloc_per_call.py`.")
    print()
    print("| workload | api | client allocations/call | server allocations/call |")
    print("| --- | --- | ---: | ---: |")
    for name, conns, depth in (("W1", 1, 1), ("W2", 4, 32)):
        for api in ("callback", "async", "async-loop"):
            c1, a1, s1 = run_case(api, conns, depth, short)
            c2, a2, s2 = run_case(api, conns, depth, long)
            calls = c2 - c1
            print(f"| {name} | {api} | {(a2 - a1) / calls:.2f} | {(s2 - s1) / calls:.2f} |")
            time.sleep(0.2)


if __name__ == "__main__":
    main()
