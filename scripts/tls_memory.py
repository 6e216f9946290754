#!/usr/bin/env python3
"""Server memory per connection, plaintext against TLS: the figure of docs/BENCHMARKS.md.

Starts `rpcbench serve` (one loop) in plaintext and with TLS (certificates made for the run
by scripts/make-test-certs.sh), opens N connections from this process, and reads the
server's VmRSS: before, with N idle connections, after each made one call (Bench.Echo of 32
bytes), and 3 s later (the server's janitor frees idle TLS connections' buffers after a
second). Prints bytes per connection for each step.

    scripts/tls_memory.py [--bin .build/release/rpcbench] [--conns 1000]
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
from swiftrpc_client import Client, tls_context  # noqa: E402


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def serve(binary, extra):
    proc = subprocess.Popen([binary, "serve", "--port", "0", "--loops", "1"] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    host, _, port = line[len("listening on "):].rpartition(":")
    return proc, host, int(port)


def measure(binary, conns, extra, context):
    proc, host, port = serve(binary, extra)
    try:
        time.sleep(0.5)
        base = rss(proc.pid)
        clients = [Client("localhost" if context else host, port, ssl_context=context) for _ in range(conns)]
        time.sleep(0.5)
        idle = rss(proc.pid)
        payload = b"x" * 32
        for c in clients:
            assert c.call("Bench.Echo", payload) == payload
        time.sleep(0.3)
        called = rss(proc.pid)
        time.sleep(3)
        settled = rss(proc.pid)
        for c in clients:
            c.close()
        return [(step - base) / conns for step in (idle, called, settled)]
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=".build/release/rpcbench")
    ap.add_argument("--conns", type=int, default=1000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as certs:
        subprocess.run([os.path.join(os.path.dirname(__file__), "make-test-certs.sh"), certs], check=True)
        context = tls_context(cafile=f"{certs}/ca.pem")
        rows = [("plaintext", measure(args.bin, args.conns, [], None)),
                ("TLS 1.3", measure(args.bin, args.conns,
                                    ["--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key"], context))]
    print(f"server RSS per connection, {args.conns} connections (bytes):")
    print(f"{'':10} {'idle':>8} {'after a call':>13} {'idle 3 s later':>15}")
    for name, (idle, called, settled) in rows:
        print(f"{name:10} {idle:8.0f} {called:13.0f} {settled:15.0f}")


if __name__ == "__main__":
    main()
