"""Unit tests for the Python client against an in-process fake server.

The fake server runs in a thread on one end of a socketpair and answers out
of order, so msgid matching and error mapping are exercised without SwiftRPC.
"""

import os
import socket
import struct
import sys
import threading

import msgpack
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from swiftrpc_client import Client, ProtocolError, RPCError  # noqa: E402


class FakeServer:
    """Server end of a socketpair; ``script(server)`` runs in a thread."""

    def __init__(self, script, timeout=5.0, max_frame_size=4 << 20):
        self.sock, client_sock = socket.socketpair()
        self.sock.settimeout(5.0)
        self.client = Client.from_socket(client_sock, timeout=timeout, max_frame_size=max_frame_size)
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        try:
            script(self)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def read(self):
        """Read one frame and return the decoded message (None on EOF)."""
        header = self._exact(4)
        if header is None:
            return None
        return msgpack.unpackb(self._exact(struct.unpack(">I", header)[0]), raw=False)

    def _exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def write(self, *messages, chunk=None):
        data = b"".join(_frame(m) for m in messages)
        if chunk is None:
            self.sock.sendall(data)
        else:  # dribble bytes to exercise frame reassembly
            for i in range(0, len(data), chunk):
                self.sock.sendall(data[i:i + chunk])

    def join(self):
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "fake server script hung"
        self.client.close()
        self.sock.close()
        if self.error is not None:
            raise self.error


def _frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _reply(request, result=None, error=None):
    return [1, request[1], error, result]


def _arith(request):
    """Behave like the reference services for one request."""
    method, params = request[2], request[3]
    if method == "Bench.Echo":
        return _reply(request, params[0])
    if method == "Arith.Divide":
        a, b = params[0]["A"], params[0]["B"]
        if b == 0:
            return _reply(request, error=[2, "divide by zero"])
        return _reply(request, {"Quo": a // b, "Rem": a % b})
    return _reply(request, error=[12, f"no such method {method}"])


def test_call_many_matches_out_of_order_replies():
    calls = [("Bench.Echo", [i]) for i in range(50)] + [
        ("Arith.Divide", [{"A": 7, "B": 2}]),
        ("Arith.Divide", [{"A": 7, "B": 0}]),
        ("No.Such", []),
    ]

    def script(srv):
        requests = [srv.read() for _ in calls]
        assert all(r[0] == 0 for r in requests)
        assert len({r[1] for r in requests}) == len(requests), "msgids must be distinct"
        srv.write(*[_arith(r) for r in reversed(requests)], chunk=7)

    srv = FakeServer(script)
    results = srv.client.call_many(calls)
    srv.join()
    assert results[:50] == list(range(50))
    assert results[50] == {"Quo": 3, "Rem": 1}
    assert isinstance(results[51], RPCError)
    assert (results[51].code, results[51].message) == (2, "divide by zero")
    assert isinstance(results[52], RPCError) and results[52].code == 12


def test_call_maps_error_reply_and_connection_survives():
    def script(srv):
        srv.write(_arith(srv.read()))
        srv.write(_arith(srv.read()))

    srv = FakeServer(script)
    with pytest.raises(RPCError) as info:
        srv.client.call("Arith.Divide", {"A": 1, "B": 0})
    assert (info.value.code, info.value.message) == (2, "divide by zero")
    assert srv.client.call("Bench.Echo", b"\x00bin") == b"\x00bin"
    srv.join()


def test_request_envelope_ext_and_notify_and_cancel():
    seen = []

    def script(srv):
        seen.extend([srv.read(), srv.read()])  # notification, then request
        srv.write(_reply(seen[1], "ok"))
        seen.extend([srv.read(), srv.read()])  # cancel, then request
        srv.write(_reply(seen[3], "ok"))

    srv = FakeServer(script)
    srv.client.notify("Log.Write", "hello")
    assert srv.client.call("Bench.Echo", 1) == "ok"
    srv.client.cancel(12345)
    assert srv.client.call("Bench.Echo", 2, ext={"trace": "t1"}) == "ok"
    srv.join()
    assert seen[0] == [2, "Log.Write", ["hello"]]
    assert seen[1] == [0, seen[1][1], "Bench.Echo", [1]], "empty ext must be omitted"
    assert seen[2] == [3, 12345]
    assert seen[3][2:] == ["Bench.Echo", [2], {"trace": "t1"}]


def test_stray_and_late_replies_are_ignored():
    def script(srv):
        req = srv.read()
        srv.write([1, (req[1] + 999) % 2**32, None, "stray"], [1, req[1], None, "mine", {"x": "y"}, "extra"])

    srv = FakeServer(script)
    assert srv.client.call("Bench.Echo", "mine") == "mine"
    srv.join()


def test_timeout_cancels_and_discards_late_reply():
    def script(srv):
        slow = srv.read()
        assert srv.read() == [3, slow[1]]
        nxt = srv.read()
        srv.write(_reply(slow, "late"), _reply(nxt, "fresh"))

    srv = FakeServer(script, timeout=0.2)
    with pytest.raises(TimeoutError):
        srv.client.call("Bench.Echo", "slow")
    srv.client.timeout = 5.0
    assert srv.client.call("Bench.Echo", "fresh") == "fresh"
    srv.join()


def test_msgid_wraps_and_skips_ids_in_flight():
    def script(srv):
        requests = [srv.read() for _ in range(3)]
        srv.write(*[_arith(r) for r in reversed(requests)])
        seen.extend(r[1] for r in requests)

    seen = []
    srv = FakeServer(script)
    srv.client._next_id = 2**32 - 2
    srv.client._abandoned.add(0)  # pretend a cancelled call still holds id 0
    assert srv.client.call_many([("Bench.Echo", [i]) for i in range(3)]) == [0, 1, 2]
    srv.join()
    assert seen == [2**32 - 2, 2**32 - 1, 1]


def test_oversized_reply_header_closes_connection():
    def script(srv):
        srv.read()
        srv.sock.sendall(b"\xff\xff\xff\xff")  # no body: the client must not wait for it

    srv = FakeServer(script, max_frame_size=1024)
    with pytest.raises(ProtocolError):
        srv.client.call("Bench.Echo", "x")
    with pytest.raises(ConnectionError):
        srv.client.call("rpc.ping")
    srv.join()


def test_bad_envelope_reply_closes_connection():
    def script(srv):
        srv.read()
        srv.write(42)

    srv = FakeServer(script)
    with pytest.raises(ProtocolError):
        srv.client.call("rpc.ping")
    srv.join()


def test_oversized_request_is_refused_before_sending():
    def script(srv):
        req = srv.read()  # the oversized request never reaches the wire
        assert req[3] == ["small"]
        srv.write(_arith(req))

    srv = FakeServer(script, max_frame_size=64)
    with pytest.raises(RPCError) as info:
        srv.client.call("Bench.Echo", "x" * 100)
    assert info.value.code == 8
    assert srv.client.call("Bench.Echo", "small") == "small"
    srv.join()


def test_server_close_raises_connection_error():
    def script(srv):
        srv.read()
        srv.sock.shutdown(socket.SHUT_WR)

    srv = FakeServer(script)
    with pytest.raises(ConnectionError):
        srv.client.call("rpc.ping")
    srv.join()
