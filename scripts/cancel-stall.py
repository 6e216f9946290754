"""What a fresh call waits while 5 connections holding 4,000 running Bench.Sleep calls each
are reset (5 rounds, worst latency each), and connection churn (connect, ping, close) with
and without 100,000 calls running.

    python3 scripts/cancel-stall.py .build/release/rpcbench [Bench.Sleep|Bench.Echo]

Bench.Sleep(0) as the probe is an async handler, so it waits behind the cancelled tasks on
the cooperative pool; Bench.Echo runs inline on the loop, so it shows the loop's own stall.
"""
import sys, time, os, socket, struct, threading
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "interop"))
os.environ["SWIFTRPC_BIN"] = sys.argv[1]
import test_hostile as h
from swiftrpc_client import Client
s = h.Server()
PROBE = sys.argv[2] if len(sys.argv) > 2 else "Bench.Sleep"
PROBE_ARGS = [0] if PROBE == "Bench.Sleep" else ([b"x"] if PROBE == "Bench.Echo" else [])
def hold(n):
    sock = socket.create_connection(s.address)
    sock.sendall(b"".join(h.frame([0, i, "Bench.Sleep", [600000]]) for i in range(n)))
    return sock
probe = Client(*s.address, timeout=30)
probe.call("rpc.ping")
worst = []
for rnd in range(5):
    socks = [hold(4000) for _ in range(5)]
    time.sleep(1.5)
    stop = threading.Event(); lat = []
    def pinger():
        while not stop.is_set():
            t = time.perf_counter(); probe.call(PROBE, *PROBE_ARGS); lat.append(time.perf_counter() - t)
    th = threading.Thread(target=pinger); th.start()
    time.sleep(0.2)
    for so in socks:
        so.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); so.close()
    time.sleep(0.5); stop.set(); th.join()
    lat.sort(); worst.append(lat[-1]*1000)
print("reset of 5 x 4000 running calls: worst fresh-call latency per round (ms):", [round(w,1) for w in worst])
# churn: connect/ping/close with and without 100k running
def churn(n):
    t = time.perf_counter()
    for _ in range(n):
        with Client(*s.address) as c: c.call("rpc.ping")
    return n / (time.perf_counter() - t)
base = [churn(2000) for _ in range(3)]
held = [hold(4000) for _ in range(25)]
time.sleep(3)
loaded = [churn(2000) for _ in range(3)]
print("connection churn (connect, ping, close) per s: idle server", [round(x) for x in base], "with 100k calls running", [round(x) for x in loaded])
for so in held:
    so.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); so.close()
s.stop()
