#!/usr/bin/env python3
"""Renders docs/BENCHMARKS.md from the JSON lines scripts/benchmarks.sh collected."""
import json
import platform
import subprocess
import sys


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.split("\n")[1].split()[1]
    return f"{cpu}, {cores} cores, {mem} GiB, Linux {platform.release()}"


def medians(rows):
    """One row per (implementation, workload): the run with the median calls/s."""
    groups = {}
    for r in rows:
        groups.setdefault((r["impl"], r["wl"]), []).append(r)
    out = []
    for key, runs in groups.items():
        runs.sort(key=lambda r: r["calls_per_sec"])
        median = dict(runs[len(runs) // 2])
        median["runs"] = [round(r["calls_per_sec"]) for r in runs]
        out.append(median)
    return out


def ratios(rows):
    """The comparisons the issues set targets for, each from the same run."""
    by = {(r["impl"], r["wl"]): r["calls_per_sec"] for r in rows}
    pairs = [("SwiftRPC callback", "crpc (C)", "Swift callback API / C core (io_uring)"),
             ("SwiftRPC async", "crpc (C)", "Swift async API / C core (io_uring)"),
             ("SwiftRPC async-loop", "crpc (C)", "Swift async API on the loop executor / C core (io_uring)"),
             ("crpc (C) epoll", "crpc (C)", "C core: epoll / io_uring"),
             ("SwiftRPC callback epoll", "SwiftRPC callback", "Swift callback API: epoll / io_uring")]
    out = ["Ratios of the medians above (same run):", "", "| ratio | W1 | W2 | W3 |", "| --- | ---: | ---: | ---: |"]
    for a, b, label in pairs:
        cells = []
        for wl in ("W1", "W2", "W3"):
            x, y = by.get((a, wl)), by.get((b, wl))
            cells.append(f"{x / y:.2f}" if x and y else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out + [""]


def await_floor(floor_rows, rows):
    """The runtime's cost per await, and the bound it puts on the async API at W2."""
    if not floor_rows:
        return []
    by = {(r["impl"], r["wl"]): r for r in rows}
    out = ["## The concurrency runtime's floor per await", "",
           "`rpcbench await-floor --executor E --duration S --cpu 1`: 128 tasks await continuations the way",
           "`RPCClient.call` does (a cancellation handler around an unsafe continuation), and the last task",
           "to wait resumes the whole batch, as a batch of replies would. No socket and no encoding: the",
           "CPU time per await is what the Swift concurrency runtime itself costs (on the loop executor,",
           "the event loop's job queue is under 2% of it).", "",
           "| executor | awaits/s | CPU ns per await | all runs (ns) |", "| --- | ---: | ---: | --- |"]
    groups = {}
    for r in floor_rows:
        groups.setdefault(r["wl"], []).append(r)
    floor_ns = {}
    for executor, runs in groups.items():
        runs.sort(key=lambda r: r["cpu_ns_per_await"])
        m = runs[len(runs) // 2]
        floor_ns[executor] = m["cpu_ns_per_await"]
        out.append(f"| {executor} | {m['awaits_per_sec']:,} | {m['cpu_ns_per_await']} | "
                   f"{', '.join(str(r['cpu_ns_per_await']) for r in runs)} |")
    callback, core = by.get(("SwiftRPC callback", "W2")), by.get(("crpc (C)", "W2"))
    if callback and core and callback.get("client_cpu_us_per_call"):
        cb_ns = callback["client_cpu_us_per_call"] * 1000
        out += ["", f"At W2 the client's one core is the limit, and the callback API spends {cb_ns:.0f} ns of it per call.",
                "An awaited call costs at least that plus one await, so the async API can reach at most:", "",
                "| executor | bound, calls/s | bound / C core | measured / C core |", "| --- | ---: | ---: | ---: |"]
        for executor, impl in (("loop", "SwiftRPC async-loop"), ("global", "SwiftRPC async")):
            if executor in floor_ns:
                bound = 1e9 / (cb_ns + floor_ns[executor])
                measured = by.get((impl, "W2"))
                m = f"{measured['calls_per_sec'] / core['calls_per_sec']:.2f}" if measured else "-"
                out.append(f"| {executor} | {bound:,.0f} | {bound / core['calls_per_sec']:.2f} | {m} |")
    return out + [""]


def main():
    path, secs, reps = sys.argv[1], sys.argv[2], sys.argv[3]
    all_rows = [json.loads(l) for l in open(path) if l.strip()]
    floor_rows = [r for r in all_rows if r["impl"] == "await floor"]
    all_rows = [r for r in all_rows if r["impl"] != "await floor"]
    order = {}
    for r in all_rows:
        order.setdefault(r["impl"], len(order))
    rows = sorted(medians(all_rows), key=lambda r: order[r["impl"]])
    floor = {r["wl"]: r for r in rows if r["impl"] == "floor"}
    out = ["# Benchmarks", "",
           "Generated by `scripts/benchmarks.sh` (also `make bench`): release builds, server and client",
           "in separate processes on loopback, server pinned to CPU 0 and client to CPU 1, "
           f"{secs} s measured after 1 s of warm-up per run. Every configuration ran {reps} times,",
           "interleaved round by round; the table shows the median run and the last column every run's",
           "calls/s (the machine is a shared 2-core VM: spread between rounds is the host, not the code).", "",
           f"Machine: {machine()}.", "",
           "Workloads (design.md): **W1** ping-pong, 1 connection x 1 call in flight, 32-byte payload;",
           "**W2** pipelined, 4 connections x 32 in flight, 32 bytes; **W3** bulk, 1 connection x 4 in flight,",
           "64 KiB request and reply. MB/s counts payload bytes both ways. `floor` is the bare C io_uring",
           "echo of the same framing (`Benchmarks/floor/echo_floor.c`): no envelope, no dispatch.",
           "Rows ending in `epoll` ran server and client forced to the epoll backend",
           "(`SWIFTRPC_BACKEND=epoll`), the fallback where io_uring is refused; the others ran on io_uring.", "",
           "| workload | implementation | calls/s | vs floor | MB/s | p50 µs | p99 µs | p999 µs | errors | all runs (calls/s) |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for wl in ("W1", "W2", "W3"):
        for r in (r for r in rows if r["wl"] == wl):
            f = floor.get(wl)
            ratio = f"{r['calls_per_sec'] / f['calls_per_sec']:.2f}x" if f and f["calls_per_sec"] else "-"
            errors = r.get("errors", 0) + r.get("mismatches", 0)
            out.append(f"| {wl} | {r['impl']} | {r['calls_per_sec']:,.0f} | {ratio} | {r['mb_per_sec']:,.1f} | "
                       f"{r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['p999_us']:.1f} | {errors} | "
                       f"{', '.join(f'{x:,}' for x in r['runs'])} |")
    out += ["", "Commands (what the script runs; `$bin` is `swift build -c release --show-bin-path`):", "",
            "```",
            "taskset -c 0 .build/bench/echo_floor serve --port 0 --cpu 0",
            ".build/bench/echo_floor load --port P --conns 4 --depth 32 --payload 32 --duration 5 --cpu 1 --json",
            "$bin/crpc-cbench serve --port 0 --loops 1 --cpu 0",
            "$bin/crpc-cbench load --port P --conns 4 --depth 32 --payload 32 --duration 5 --cpu 1 --json",
            "$bin/rpcbench serve --port 0 --loops 1 --cpu 0",
            "$bin/rpcbench load --target 127.0.0.1:P --conns 4 --depth 32 --payload 32 --duration 5 --cpu 1 --api callback --json",
            "SWIFTRPC_BACKEND=epoll $bin/crpc-cbench serve ...   # and load, likewise: the epoll rows",
            "```", ""]
    out += ratios(rows)
    out += await_floor(floor_rows, rows)
    print("\n".join(out))


if __name__ == "__main__":
    main()
