"""Interop tests: the Python client against a live SwiftRPC server.

Start a server (e.g. ``rpcbench serve``) and point the tests at it:

    SWIFTRPC_TARGET=127.0.0.1:7070 python3 -m pytest -q Tests/interop/test_interop.py
    SWIFTRPC_TARGET=unix:/tmp/rpc.sock python3 -m pytest -q Tests/interop/test_interop.py
    SWIFTRPC_TARGET=127.0.0.1:7443 SWIFTRPC_TLS_CA=ca.pem \
        SWIFTRPC_TLS_CERT=client.pem SWIFTRPC_TLS_KEY=client.key python3 -m pytest ...

SWIFTRPC_TARGET is a target string of the client (``host:port``, ``[v6addr]:port``,
``unix:/path``, ``unix:@abstract``); SWIFTRPC_ADDR (``host:port``) is its older name.
Any SWIFTRPC_TLS_* variable turns TLS on: SWIFTRPC_TLS_CA is the CA to trust (default:
the system's), SWIFTRPC_TLS_CERT/SWIFTRPC_TLS_KEY the client certificate for mutual TLS,
SWIFTRPC_TLS_SERVER_NAME the name to check (default: the host; needed over a Unix socket).
"""

import os
import socket
import ssl
import struct
import time
import sys

import msgpack
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from swiftrpc_client import Client, RPCError, open_stream, tls_context  # noqa: E402


def _target_of_addr(addr):
    """SWIFTRPC_ADDR as a target: its IPv6 host may come unbracketed, as `rpcbench serve`
    prints it ("listening on ::1:7070")."""
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


TARGET = os.environ.get("SWIFTRPC_TARGET") or _target_of_addr(os.environ.get("SWIFTRPC_ADDR"))
TLS = {name: os.environ.get(f"SWIFTRPC_TLS_{name.upper()}") or None
       for name in ("ca", "cert", "key", "server_name")}
pytestmark = pytest.mark.skipif(
    not TARGET, reason="SWIFTRPC_TARGET (or SWIFTRPC_ADDR) is not set: the target of a running "
                       "`rpcbench serve`, e.g. 127.0.0.1:7070 or unix:/tmp/rpc.sock")


def _connect_args():
    """open_stream's arguments after the target, from the SWIFTRPC_TLS_* variables."""
    if not any(TLS.values()):
        return {}
    return {"ssl_context": tls_context(TLS["ca"], TLS["cert"], TLS["key"]),
            "server_hostname": TLS["server_name"]}


def _connect(timeout=5.0):
    """A Client on the server under test, over whatever transport the environment names."""
    return Client.connect(TARGET, timeout=timeout, **_connect_args())


@pytest.fixture
def client():
    with _connect() as c:
        yield c


def test_transport_is_the_one_asked_for(client):
    """A TLS run must really be TLS (and a plaintext run plaintext)."""
    assert client.tls_version == ("TLSv1.3" if any(TLS.values()) else None)
    families = (socket.AF_UNIX,) if TARGET.startswith("unix:") else (socket.AF_INET, socket.AF_INET6)
    assert client._sock.family in families


# -- raw-socket helpers for frames the client would never send --------------

def _raw():
    """A bare stream (TLS-wrapped in a TLS run) to the server under test."""
    return open_stream(TARGET, 5.0, **_connect_args())


def _frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def _read_frame(sock):
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    return msgpack.unpackb(_recv_exact(sock, size), raw=False, strict_map_key=False)


def _assert_closed(sock):
    """The server must close the connection (EOF or reset) without replying. Over TLS
    the end may be a close_notify (b""), or a bare EOF that ssl reports as SSLEOFError."""
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return
    except socket.timeout:
        pytest.fail("server kept the connection open")
    assert data == b"", f"expected the connection to be closed, got {data[:64]!r}"


# -- built-ins ---------------------------------------------------------------

def test_ping_returns_nil(client):
    assert client.call("rpc.ping") is None


def test_methods_lists_reference_services(client):
    methods = client.call("rpc.methods")
    assert isinstance(methods, list)
    for name in ("Bench.Echo", "Arith.Multiply", "Arith.Divide"):
        assert name in methods


def test_stats_counts_calls_and_errors_per_method(client):
    def row(name):
        rows = client.call("rpc.stats")
        assert isinstance(rows, list)
        assert [r["method"] for r in rows] == sorted(r["method"] for r in rows)
        return next(r for r in rows if r["method"] == name)

    before = row("Arith.Divide")
    assert client.call("Arith.Divide", {"A": 7, "B": 2}) == {"Quo": 3, "Rem": 1}
    with pytest.raises(RPCError) as e:
        client.call("Arith.Divide", {"A": 1, "B": 0})
    assert e.value.code == 2
    after = row("Arith.Divide")
    # Other tests may run against the same server concurrently: at least our two calls.
    assert after["calls"] - before["calls"] >= 2
    assert after["errors"] - before["errors"] >= 1
    assert after["errorsByCode"].get("2", 0) - before["errorsByCode"].get("2", 0) >= 1
    assert "rpc.stats" in client.call("rpc.methods")


# -- reference services -------------------------------------------------------

@pytest.mark.parametrize("value", [
    "hello, swift",
    b"\x00\x01\xffbinary",
    {"name": "x", "list": [1, -2, 3.5, None, True], "inner": {"k": b"v", "n": {"deep": []}}},
], ids=["str", "bin", "nested-map"])
def test_echo_roundtrips(client, value):
    assert client.call("Bench.Echo", value) == value


def test_echo_bin_stays_bin(client):
    assert type(client.call("Bench.Echo", b"bytes")) is bytes


def test_multiply(client):
    assert client.call("Arith.Multiply", {"A": 7, "B": 6}) == 42


def test_divide(client):
    assert client.call("Arith.Divide", {"A": 7, "B": 2}) == {"Quo": 3, "Rem": 1}


def test_divide_by_zero(client):
    with pytest.raises(RPCError) as info:
        client.call("Arith.Divide", {"A": 7, "B": 0})
    assert (info.value.code, info.value.message) == (2, "divide by zero")


def test_ext_metadata_is_accepted(client):
    ext = {"trace-id": "abc123", "blob": b"\x01\x02", "rpc-timeout-us": 5_000_000}
    assert client.call("Bench.Echo", "with ext", ext=ext) == "with ext"


# -- errors keep the connection usable ---------------------------------------

def test_unknown_method(client):
    with pytest.raises(RPCError) as info:
        client.call("No.Such")
    assert info.value.code == 12
    assert client.call("rpc.ping") is None


def test_params_that_do_not_decode(client):
    with pytest.raises(RPCError) as info:
        client.call("Arith.Multiply", "not a map")
    assert info.value.code == 3
    assert client.call("Arith.Multiply", {"A": 3, "B": 4}) == 12


# -- pipelining and notifications ---------------------------------------------

def test_pipelined_batch_of_1000(client):
    payloads = [f"payload-{i}-" + "x" * (i % 50) for i in range(1000)]
    results = client.call_many([("Bench.Echo", [p]) for p in payloads])
    assert results == payloads


def test_notification_gets_no_reply():
    with _raw() as sock:
        sock.sendall(_frame([2, "Bench.Echo", ["oneway"]]) + _frame([0, 77, "rpc.ping", []]))
        first = _read_frame(sock)
        assert first[:2] == [1, 77], f"first frame after a notification was {first!r}"
        assert first[2] is None and first[3] is None


# -- malformed input closes only the offending connection ---------------------

def test_bad_envelope_closes_only_that_connection():
    with _raw() as bad, _connect() as good:
        assert good.call("rpc.ping") is None
        bad.sendall(_frame(42))  # a bare int, not an array
        _assert_closed(bad)
        assert good.call("Bench.Echo", "still here") == "still here"


def test_oversized_frame_header_closes_connection():
    with _raw() as bad:
        bad.sendall(b"\xff\xff\xff\xff")
        _assert_closed(bad)
    with _connect() as fresh:
        assert fresh.call("rpc.ping") is None


def test_server_answers_deadline_exceeded(client):
    # The caller's deadline travels in rpc-timeout-us; the server cancels the 5 s sleep when
    # it passes and answers code 4 itself (this client waits far longer on its own).
    start = time.monotonic()
    with pytest.raises(RPCError) as err:
        client.call("Bench.Sleep", 5000, ext={"rpc-timeout-us": 100_000})
    assert err.value.code == 4
    assert time.monotonic() - start < 2.0
    assert client.call("Bench.Sleep", 1) == 1  # the connection is fine
