#!/usr/bin/env python3
"""Full TLS 1.3 handshakes per second on one server loop (ECDSA P-256, X25519).

Starts `rpcbench serve --loops 1` with TLS (certificates made for the run by
scripts/make-test-certs.sh) pinned to CPU 0, then WORKERS client processes pinned to CPU 1
that each connect, handshake (no resumption: the server issues no tickets), make one
rpc.ping call (so the server has finished its side) and close, for DURATION seconds.
Prints the handshakes completed per second and the server's CPU time per handshake (from
/proc/PID/stat): 1e6 / that is what one loop sustains when handshakes are all it does.

    scripts/tls_handshakes.py [--bin .build/release/rpcbench] [--duration 5] [--workers 3]
"""
import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
from swiftrpc_client import Client, tls_context  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(port, cafile, duration, cpu, counts):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    context = tls_context(cafile=cafile)
    done, end = 0, time.monotonic() + duration
    while time.monotonic() < end:
        with Client("localhost", port, ssl_context=context) as c:
            c.call("rpc.ping")
        done += 1
    counts.put(done)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".build/release/rpcbench")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--workers", type=int, default=3)
    args = ap.parse_args()
    pin = os.cpu_count() >= 2
    with tempfile.TemporaryDirectory() as certs:
        subprocess.run([os.path.join(os.path.dirname(__file__), "make-test-certs.sh"), certs], check=True)
        cmd = [args.bin, "serve", "--port", "0", "--loops", "1",
               "--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key"] + (["--cpu", "0"] if pin else [])
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = server.stdout.readline().strip()
            port = int(line.rpartition(":")[2])
            counts = multiprocessing.Queue()
            before = cpu_seconds(server.pid)
            start = time.monotonic()
            procs = [multiprocessing.Process(target=worker, args=(port, f"{certs}/ca.pem", args.duration,
                                                                  1 if pin else None, counts))
                     for _ in range(args.workers)]
            for p in procs:
                p.start()
            total = sum(counts.get() for _ in procs)
            for p in procs:
                p.join()
            elapsed = time.monotonic() - start
            used = cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait()
    print(f"{total} TLS 1.3 handshakes in {elapsed:.1f} s: {total / elapsed:.0f}/s with the client on one core; "
          f"server CPU {used * 1e6 / total:.0f} us per handshake -> {total / used:.0f}/s per server loop")


if __name__ == "__main__":
    main()
