"""Streams (design.md, "Streams"): the Python client's stream support, and the server held
to the wire rules by the client and by a hand-written hostile peer.

Three groups, each skipping on its own, saying why:

1. Unit tests against an in-process fake server (test_client_unit.FakeServer): the frames
   the client writes and how it routes, grants and checks what it reads. Always run.
2. Interop tests with the client against the server in SWIFTRPC_TARGET (or SWIFTRPC_ADDR;
   the SWIFTRPC_TLS_* variables as in test_interop.py), using the reference services
   Bench.Stream [count, size], Bench.Upload [] and Bench.EchoStream [].
3. Hostile tests: raw sockets against a `rpcbench serve` of the test's own, started from
   SWIFTRPC_BIN (as test_hostile.py does): credit violations, frames for unknown ids,
   cancel mid-stream, a reader that never grants, a deadline mid-stream.

Groups 2 and 3 skip while the server's rpc.methods lists no Bench.Stream (a server from
before streams), so the suite passes before the server has them.

    SWIFTRPC_TARGET=127.0.0.1:7070 SWIFTRPC_BIN=.build/debug/rpcbench \\
        python3 -m pytest -q Tests/interop/test_streams.py
"""

import os
import socket
import struct
import sys
import time

import msgpack
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from swiftrpc_client import (  # noqa: E402
    BIDIRECTIONAL, CLIENT_STREAMING, SERVER_STREAMING, Client, RPCError)

import test_interop as live  # noqa: E402  (the target and transport from the environment)
from test_client_unit import FakeServer  # noqa: E402
from test_hostile import BIN, Server  # noqa: E402

NO_STREAMS = "the server's rpc.methods lists no Bench.Stream: it serves no streams yet"


def frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def body_size(message):
    """What byte credit counts for ``message``: its frame without the 4-byte length."""
    return len(msgpack.packb(message, use_bin_type=True))


def index_of(element):
    """The index Bench.Stream writes big-endian in an element's first 4 bytes."""
    return struct.unpack(">I", element[:4])[0]


def assert_stream_element(element, index, size):
    assert type(element) is bytes and len(element) == size
    if size >= 4:
        assert index_of(element) == index
        assert element[4:] == bytes(size - 4), f"element {index}: bytes after the index are not zero"


# -- 1. unit tests: the client against a fake server ----------------------------------

def _silent(srv, seconds):
    """Assert the client writes nothing to the fake server for ``seconds``."""
    srv.sock.settimeout(seconds)
    try:
        data = srv.sock.recv(1, socket.MSG_PEEK)
    except socket.timeout:
        return
    finally:
        srv.sock.settimeout(5.0)
    pytest.fail(f"the client wrote while it should wait: {data!r}")


def test_unit_open_frame_metadata_and_end():
    seen = []

    def script(srv):
        opened = srv.read()
        seen.append(opened)
        sid = opened[1]
        srv.write([5, sid, 0, 0, {"lead": "L"}], [4, sid, b"a"], [4, sid, b"b", {"k": "v"}],
                  [1, sid, None, None, {"trail": "T"}])

    srv = FakeServer(script)
    stream = srv.client.server_stream("S.Stream", 2, 1, credit=(8, 1000), metadata={"trace": "t"},
                                      timeout=2.5)
    assert stream.kind == SERVER_STREAMING
    assert stream.wait_accepted() == {"lead": "L"}
    assert stream.receive() == (b"a", {})
    assert stream.receive() == (b"b", {"k": "v"})
    assert stream.receive() is None
    assert stream.ended and stream.error is None and stream.result is None
    assert stream.trailing_metadata == {"trail": "T"}
    srv.join()
    assert seen[0] == [0, stream.sid, "S.Stream", [2, 1],
                       {"trace": "t", "rpc-stream": 1, "rpc-credit": [8, 1000], "rpc-timeout-us": 2_500_000}]


def test_unit_credit_is_granted_as_elements_are_taken_not_as_they_arrive():
    value = b"x" * 10

    def script(srv):
        sid = srv.read()[1]
        srv.write([5, sid, 0, 0], *[[4, sid, value]] * 4)  # the whole window at once
        ping = srv.read()  # the consumer took one of four: no credit yet, though all arrived
        assert ping[2] == "rpc.ping", f"expected the ping first, got {ping!r}"
        srv.write([1, ping[1], None, None])
        assert srv.read() == [5, sid, 2, 2 * body_size([4, sid, value])]  # half the window taken
        srv.write([1, sid, None, None])

    srv = FakeServer(script)
    stream = srv.client.server_stream("S.Stream", credit=(4, 1 << 20))
    assert next(stream) == value
    assert srv.client.call("rpc.ping") is None
    assert list(stream) == [value] * 3
    srv.join()


def test_unit_an_element_beyond_the_credit_cancels_the_stream():
    def script(srv):
        sid = srv.read()[1]
        ping = srv.read()
        srv.write([5, sid, 0, 0], [4, sid, b"0"], [4, sid, b"1"], [4, sid, b"2"], [1, ping[1], None, "pong"])
        assert srv.read() == [3, sid]
        srv.write([4, sid, b"late"], [1, sid, [1, "cancelled"], None])  # dropped: the id is gone
        srv.write(_answer(srv.read()))

    srv = FakeServer(script)
    stream = srv.client.server_stream("S.Stream", credit=(2, 1 << 20))
    assert srv.client.call("rpc.ping") == "pong"  # the frames arrive while a call reads
    assert stream.ended
    assert [next(stream), next(stream)] == [b"0", b"1"]  # the two within the credit
    with pytest.raises(RPCError) as err:
        next(stream)
    assert err.value.code == 8
    assert srv.client.call("Bench.Echo", "after") == "after"
    assert stream.sid not in srv.client._abandoned  # its late end came and was dropped
    srv.join()


@pytest.mark.parametrize("error", [[3, "params do not decode"], [12, "rpc: can't find method S.Stream"]],
                         ids=["bad params", "a server without streams"])
def test_unit_an_error_end_raises_on_iteration(error):
    def script(srv):
        sid = srv.read()[1]
        srv.write([1, sid, error, None, {"why": "w"}])

    srv = FakeServer(script)
    stream = srv.client.server_stream("S.Stream", 1, 1)
    with pytest.raises(RPCError) as err:
        list(stream)
    assert (err.value.code, err.value.message) == tuple(error)
    assert stream.leading_metadata == {} and stream.trailing_metadata == {"why": "w"}
    with pytest.raises(RPCError):  # and again: the stream stays ended
        next(stream)
    srv.join()


def test_unit_frames_of_many_streams_and_calls_interleave():
    def script(srv):
        a, b = srv.read()[1], srv.read()[1]
        call = srv.read()
        srv.write([5, a, 0, 0], [4, b, b"b0"], [4, a, b"a0"], [1, (call[1] + 1000) % 2**32, None, "stray"],
                  [4, 77777, b"no such stream"], [5, 77777, 1, 1], [1, call[1], None, "c"],
                  [4, a, b"a1"], [1, a, None, None], [4, b, b"b1"], [1, b, None, None])

    srv = FakeServer(script)
    a = srv.client.server_stream("S.A")
    b = srv.client.server_stream("S.B")
    assert a.sid != b.sid
    assert srv.client.call("Bench.Echo", "c") == "c"
    assert list(b) == [b"b0", b"b1"]
    assert list(a) == [b"a0", b"a1"]
    srv.join()


def test_unit_send_waits_for_acceptance_and_both_credits():
    value = b"y" * 40
    seen = []

    def script(srv):
        opened = srv.read()
        seen.append(opened)
        sid = opened[1]
        element = body_size([4, sid, value])
        _silent(srv, 0.3)  # no element before the server's first credit frame
        srv.write([5, sid, 2, 2 * element, {"lead": "L"}])
        assert [srv.read(), srv.read()] == [[4, sid, value]] * 2
        _silent(srv, 0.3)  # out of both
        srv.write([5, sid, 5, 0])
        _silent(srv, 0.3)  # out of bytes still
        srv.write([5, sid, 0, element + 5])  # bytes for one, and one more may overshoot
        assert [srv.read(), srv.read()] == [[4, sid, value]] * 2
        _silent(srv, 0.3)  # the overshoot is owed: 5 - element bytes
        srv.write([5, sid, 0, element])  # back to 5
        assert srv.read() == [4, sid, value, {"n": "5"}]
        assert srv.read() == [6, sid]
        srv.write([1, sid, None, {"count": 5}])

    srv = FakeServer(script)
    upload = srv.client.client_stream("S.Upload", metadata={"m": b"\x01"})
    assert upload.kind == CLIENT_STREAMING
    for _ in range(4):
        upload.send(value)
    upload.send(value, metadata={"n": "5"})
    assert upload.leading_metadata == {"lead": "L"}
    assert upload.close_and_receive() == {"count": 5}
    srv.join()
    assert seen[0][2:] == ["S.Upload", [], {"m": b"\x01", "rpc-stream": 2}]  # no rpc-credit: it takes none


def test_unit_a_stream_the_server_ends_at_once_sends_nothing_more():
    """A server that knows nothing of streams answers the open as a call; the client must
    not follow with an element or half-close, types that server would close the connection on."""
    def script(srv):
        sid = srv.read()[1]
        srv.write([1, sid, [12, "rpc: can't find method S.Upload"], None])
        ping = srv.read()
        assert ping[2] == "rpc.ping", f"expected only the ping after the end, got {ping!r}"
        srv.write([1, ping[1], None, None])

    srv = FakeServer(script)
    upload = srv.client.client_stream("S.Upload")
    with pytest.raises(RPCError) as err:
        upload.send(b"x")
    assert err.value.code == 12
    with pytest.raises(RPCError):
        upload.close_and_receive()
    assert srv.client.call("rpc.ping") is None
    srv.join()


def test_unit_send_after_a_successful_early_end_is_eof():
    def script(srv):
        sid = srv.read()[1]
        srv.write([5, sid, 1, 100], [1, sid, None, "early"])

    srv = FakeServer(script)
    upload = srv.client.client_stream("S.Upload")
    upload.send(b"1")
    with pytest.raises(EOFError):
        upload.send(b"2")
    assert upload.close_and_receive() == "early"
    srv.join()


def test_unit_the_streams_deadline_ends_it_with_code_4():
    def script(srv):
        opened = srv.read()
        sid = opened[1]
        assert opened[4]["rpc-timeout-us"] == 200_000
        srv.write([5, sid, 0, 0], [4, sid, b"0"])
        assert srv.read() == [3, sid]  # the client's deadline passed first here
        srv.write([1, sid, [4, "deadline exceeded"], None])  # late: dropped
        srv.write(_answer(srv.read()))

    srv = FakeServer(script)
    stream = srv.client.server_stream("S.Stream", timeout=0.2)
    start = time.monotonic()
    assert next(stream) == b"0"
    with pytest.raises(RPCError) as err:
        next(stream)
    assert err.value.code == 4
    assert 0.15 < time.monotonic() - start < 2.0
    assert srv.client.call("Bench.Echo", 1) == 1
    srv.join()


def test_unit_the_clients_timeout_cancels_a_waiting_stream():
    def script(srv):
        sid = srv.read()[1]
        assert srv.read() == [3, sid]

    srv = FakeServer(script, timeout=0.2)
    stream = srv.client.server_stream("S.Stream")
    with pytest.raises(TimeoutError):
        next(stream)
    assert isinstance(stream.error, TimeoutError)
    with pytest.raises(TimeoutError):
        next(stream)
    srv.join()


def test_unit_leaving_a_with_block_cancels_and_close_ends_streams():
    def script(srv):
        first = srv.read()[1]
        srv.write([5, first, 0, 0], [4, first, b"e"])
        assert srv.read() == [3, first]
        srv.read()  # the second open
        srv.sock.shutdown(socket.SHUT_WR)

    srv = FakeServer(script)
    with srv.client.server_stream("S.Stream") as stream:
        assert next(stream) == b"e"
    assert stream.error.code == 1
    second = srv.client.server_stream("S.Stream")
    with pytest.raises(ConnectionError):
        next(second)
    assert second.ended and isinstance(second.error, ConnectionError)
    srv.join()


def test_unit_bidirectional_echo():
    def script(srv):
        sid = srv.read()[1]
        srv.write([5, sid, 16, 1 << 20])
        while True:
            msg = srv.read()
            if msg[0] == 6:
                srv.write([1, sid, None, None])
                return
            assert msg[0] == 4
            srv.write(msg)

    srv = FakeServer(script)
    bidi = srv.client.bidi_stream("S.EchoStream")
    assert bidi.kind == BIDIRECTIONAL
    bidi.send(b"a")
    assert next(bidi) == b"a"
    bidi.send(b"b")
    bidi.send(b"c", metadata={"i": "3"})
    assert next(bidi) == b"b"
    assert bidi.receive() == (b"c", {"i": "3"})
    bidi.half_close()
    assert list(bidi) == [] and bidi.result is None and bidi.error is None
    srv.join()


def test_unit_stream_ids_are_not_reused_while_open():
    def script(srv):
        srv.read()  # the open
        call = srv.read()
        seen.append(call[1])
        srv.write(_answer(call))

    seen = []
    srv = FakeServer(script)
    srv.client._next_id = 5
    stream = srv.client.server_stream("S.Stream")
    assert stream.sid == 5
    srv.client._next_id = 5
    assert srv.client.call("Bench.Echo", "x") == "x"
    assert seen == [6]
    srv.join()


def test_unit_arguments_are_checked():
    ours, theirs = socket.socketpair()
    with Client.from_socket(ours) as client, theirs:
        for credit in [(0, 1), (1, 0), (1,), "16", (True, 1)]:
            with pytest.raises(ValueError):
                client.server_stream("S.Stream", credit=credit)
        for key in ("rpc-stream", "rpc-credit", "rpc-timeout-us"):
            with pytest.raises(ValueError):
                client.server_stream("S.Stream", metadata={key: 1})
        with pytest.raises(ValueError):
            client.client_stream("S.Upload", timeout=0)
        assert client._streams == {}
        with pytest.raises(ValueError):
            client.server_stream("S.Stream").send(b"x")
        with pytest.raises(ValueError):
            client.client_stream("S.Upload").receive()
        with pytest.raises(ValueError):
            client.bidi_stream("S.EchoStream").close_and_receive()


def _answer(request):
    """An echo reply to a fake server's request."""
    return [1, request[1], None, request[3][0] if request[3] else None]


# -- 2. interop: the client against the server under test -----------------------------

@pytest.fixture
def client():
    if not live.TARGET:
        pytest.skip("SWIFTRPC_TARGET (or SWIFTRPC_ADDR) is not set: the target of a running "
                    "`rpcbench serve`")
    with live._connect(timeout=10.0) as c:
        if "Bench.Stream" not in c.call("rpc.methods"):
            pytest.skip(NO_STREAMS)
        yield c


def test_stream_sends_every_element_with_its_index(client):
    with client.server_stream("Bench.Stream", 100, 64) as stream:
        assert isinstance(stream.wait_accepted(), dict)
        elements = list(stream)
    assert len(elements) == 100
    for i, element in enumerate(elements):
        assert_stream_element(element, i, 64)
    assert stream.ended and stream.error is None and stream.result is None
    assert isinstance(stream.trailing_metadata, dict)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1000, 200_000])
def test_stream_element_sizes(client, size):
    """200 KB elements are larger than the whole default byte window (64 KiB): each one
    overshoots it, and the stream must still flow."""
    elements = list(client.server_stream("Bench.Stream", 5, size))
    assert len(elements) == 5
    for i, element in enumerate(elements):
        assert_stream_element(element, i, size)


def test_stream_of_no_elements(client):
    stream = client.server_stream("Bench.Stream", 0, 16)
    assert list(stream) == []
    assert stream.ended and stream.error is None and stream.result is None


@pytest.mark.parametrize("credit", [(2, 64), (1, 1), (3, 1 << 20)])
def test_a_small_window_still_delivers_everything(client, credit):
    """The server may send only the window ahead: everything arrives only if the client
    grants credit back as it takes elements."""
    elements = list(client.server_stream("Bench.Stream", 50, 100, credit=credit))
    assert [index_of(e) for e in elements] == list(range(50))


def test_a_long_stream_with_the_default_window(client):
    stream = client.server_stream("Bench.Stream", 5000, 8)
    assert sum(1 for i, e in enumerate(stream) if index_of(e) == i) == 5000


def test_upload_counts_elements_and_bytes(client):
    sizes = [i * 37 % 3000 for i in range(2000)]
    upload = client.client_stream("Bench.Upload")
    for size in sizes:
        upload.send(b"\x5a" * size)
    assert isinstance(upload.leading_metadata, dict)  # the acceptance came before any element
    assert upload.close_and_receive() == {"count": len(sizes), "bytes": sum(sizes)}
    assert isinstance(upload.trailing_metadata, dict)


def test_upload_of_elements_larger_than_the_byte_window(client):
    """Each element overshoots any window of 64 KiB: the client sends one, then waits."""
    upload = client.client_stream("Bench.Upload")
    for i in range(12):
        upload.send(bytes([i]) * 300_000)
    assert upload.close_and_receive() == {"count": 12, "bytes": 12 * 300_000}


def test_upload_of_nothing(client):
    assert client.client_stream("Bench.Upload").close_and_receive() == {"count": 0, "bytes": 0}


def test_echo_stream_in_lockstep_and_in_batches(client):
    with client.bidi_stream("Bench.EchoStream", credit=(16, 1 << 20)) as bidi:
        for i in range(200):
            value = i.to_bytes(4, "big") * (1 + i % 50)
            bidi.send(value)
            assert next(bidi) == value
        for batch in range(5):  # a batch within the window: the server never waits on us
            values = [bytes([batch, j]) * 100 for j in range(16)]
            for value in values:
                bidi.send(value)
            assert [next(bidi) for _ in values] == values
        bidi.send(b"last")
        bidi.half_close()
        assert list(bidi) == [b"last"]  # the echoes still due come before the end
        assert bidi.error is None and bidi.result is None


def test_echo_stream_through_a_one_message_window(client):
    bidi = client.bidi_stream("Bench.EchoStream", credit=(1, 1))
    for i in range(20):
        bidi.send(bytes([i]) * 5000)
        assert next(bidi) == bytes([i]) * 5000
    bidi.half_close()
    assert list(bidi) == []


def test_echo_stream_of_nothing(client):
    bidi = client.bidi_stream("Bench.EchoStream")
    bidi.half_close()
    assert list(bidi) == [] and bidi.error is None


def test_calls_are_answered_while_a_stream_stalls(client):
    """A stream whose reader takes nothing must not hold up the connection's calls, and
    the server must not send it more than its window meanwhile."""
    with client.server_stream("Bench.Stream", 300, 512, credit=(4, 1 << 20)) as stream:
        assert index_of(next(stream)) == 0
        for i in range(50):
            assert client.call("Bench.Echo", i) == i
        assert client.call_many([("Bench.Echo", [b"p" * i]) for i in range(200)]) == \
            [b"p" * i for i in range(200)]
        time.sleep(0.2)
        assert client.call("rpc.ping") is None
        assert not stream.ended, stream.error  # a server over its credit: cancelled, code 8
        assert len(stream._inbox) <= 4
        assert [index_of(e) for e in stream] == list(range(1, 300))


def test_streams_and_calls_interleave_on_one_connection(client):
    a = client.server_stream("Bench.Stream", 40, 10, credit=(2, 1 << 20))
    b = client.server_stream("Bench.Stream", 40, 2000, credit=(8, 4096))
    upload = client.client_stream("Bench.Upload")
    for i in range(40):
        assert_stream_element(next(a), i, 10)
        upload.send(b"u" * i)
        assert_stream_element(next(b), i, 2000)
        if i % 10 == 0:
            assert client.call("Bench.Echo", f"call {i}") == f"call {i}"
    assert list(a) == [] and list(b) == []
    assert upload.close_and_receive() == {"count": 40, "bytes": sum(range(40))}


def test_metadata_at_open_and_per_element_is_harmless(client):
    metadata = {"trace-id": "abc123", "blob": b"\x00\x01\xff", "x-empty": ""}
    assert len(list(client.server_stream("Bench.Stream", 3, 8, metadata=metadata))) == 3
    upload = client.client_stream("Bench.Upload", metadata=metadata)
    upload.send(b"abc", metadata={"part": "1"})
    upload.send(b"de", metadata={"part": b"\x02"})
    assert upload.close_and_receive() == {"count": 2, "bytes": 5}
    bidi = client.bidi_stream("Bench.EchoStream", metadata=metadata)
    bidi.send(b"e", metadata={"k": "v"})
    assert next(bidi) == b"e"
    bidi.half_close()
    assert list(bidi) == []
    assert client.call("rpc.ping") is None


@pytest.mark.parametrize("params", [("many", "strings"), (), (None, 4)], ids=["strings", "none", "nil count"])
def test_bad_params_end_the_stream_with_code_3(client, params):
    stream = client.server_stream("Bench.Stream", *params)
    with pytest.raises(RPCError) as err:
        list(stream)
    assert err.value.code == 3
    assert client.call("Bench.Echo", "fine") == "fine"


@pytest.mark.parametrize("kind,method", [
    ("server", "No.Such"), ("client", "No.Such"), ("bidi", "No.Such"),
    ("server", "Bench.Echo"),       # a call, not a stream
    ("server", "Bench.Upload"),     # a stream of another kind
    ("client", "Bench.Stream"),
    ("bidi", "Bench.Upload"),
])
def test_a_method_unknown_as_that_kind_of_stream_is_code_12(client, kind, method):
    if kind == "server":
        with pytest.raises(RPCError) as err:
            list(client.server_stream(method, 1, 1))
    elif kind == "client":
        with pytest.raises(RPCError) as err:
            client.client_stream(method).close_and_receive()
    else:
        stream = client.bidi_stream(method)
        stream.half_close()
        with pytest.raises(RPCError) as err:
            list(stream)
    assert err.value.code == 12
    assert client.call("rpc.ping") is None


def test_the_deadline_ends_a_stream_mid_way_with_code_4(client):
    """rpc-timeout-us bounds the whole stream. The reader stalls past it: the server ends
    the stream (code 4), or, should the client look first, the client does the same."""
    stream = client.server_stream("Bench.Stream", 1_000_000, 16, credit=(4, 65536), timeout=0.3)
    start = time.monotonic()
    assert index_of(next(stream)) == 0
    time.sleep(0.5)
    with pytest.raises(RPCError) as err:
        for _ in stream:
            pass
    assert err.value.code == 4
    assert time.monotonic() - start < 3.0
    assert client.call("Bench.Echo", "after") == "after"


def test_cancel_mid_stream_then_the_connection_carries_on(client):
    with client.server_stream("Bench.Stream", 1_000_000, 64, credit=(8, 65536)) as stream:
        for i in range(20):
            assert index_of(next(stream)) == i
    assert stream.error.code == 1
    assert client.call("Bench.Echo", "after cancel") == "after cancel"
    assert len(list(client.server_stream("Bench.Stream", 10, 4))) == 10


# -- 3. hostile: raw frames against a server of the test's own ----------------------

@pytest.fixture
def server():
    if not BIN:
        pytest.skip("SWIFTRPC_BIN is not set (path of rpcbench)")
    s = Server()
    try:
        with Client(*s.address) as c:
            if "Bench.Stream" not in c.call("rpc.methods"):
                pytest.skip(NO_STREAMS)
    except BaseException:  # the skip too
        s.stop()
        raise
    yield s
    assert s.alive(), s.stop()
    s.stop()


class Peer:
    """A raw connection that writes frames by hand and reads them back one by one."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=5.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data = b""

    def send(self, *messages):
        self.sock.sendall(b"".join(frame(m) for m in messages))

    def read(self, timeout=5.0):
        """The next frame, or None when none is whole within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.data) >= 4:
                (n,) = struct.unpack(">I", self.data[:4])
                if len(self.data) >= 4 + n:
                    body, self.data = self.data[4:4 + n], self.data[4 + n:]
                    return msgpack.unpackb(body, raw=False, strict_map_key=False)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return None
            if not chunk:
                raise EOFError("the server closed the connection")
            self.data += chunk

    def read_until(self, match, timeout=5.0):
        """The first frame ``match`` accepts, and the frames before it."""
        before, deadline = [], time.monotonic() + timeout
        while True:
            message = self.read(max(0.0, deadline - time.monotonic()))
            assert message is not None, f"no matching frame within {timeout} s; got {before[-5:]!r}"
            if match(message):
                return message, before
            before.append(message)

    def read_for(self, seconds):
        """Every frame that arrives within ``seconds``."""
        frames, deadline = [], time.monotonic() + seconds
        while (message := self.read(max(0.0, deadline - time.monotonic()))) is not None:
            frames.append(message)
        return frames

    def call(self, msgid, method, *params):
        """An ordinary call: its result, after the frames of other ids that came first."""
        self.send([0, msgid, method, list(params)])
        reply, before = self.read_until(lambda m: m[:2] == [1, msgid])
        assert reply[2] is None, reply
        return reply[3], before

    def close(self):
        self.sock.close()


def is_end(sid):
    return lambda m: m[0] == 1 and m[1] == sid


def elements(frames, sid):
    return [m for m in frames if m[0] == 4 and m[1] == sid]


def test_hostile_elements_beyond_the_servers_credit_end_the_stream_with_code_8(server):
    peer = Peer(server.address)
    peer.send([0, 1, "Bench.Upload", [], {"rpc-stream": 2}])
    accept = peer.read()
    assert accept is not None and accept[:2] == [5, 1], f"expected the server's credit, got {accept!r}"
    messages, nbytes = accept[2], accept[3]
    element = [4, 1, b"x"]
    allowed = min(messages, nbytes // body_size(element) + 1)
    # Four times what was granted, in one write: the server cannot have granted more
    # before most of it arrived.
    peer.send(*[element] * (4 * allowed + 64))
    end, before = peer.read_until(is_end(1))
    assert end[2] is not None and end[2][0] == 8, f"expected code 8, got {end!r}"
    assert all(m[:2] == [5, 1] for m in before), before
    result, between = peer.call(2, "Bench.Echo", "still here")
    assert result == "still here"
    assert not [m for m in between if m[1] == 1], f"frames for sid 1 after its end: {between!r}"
    peer.close()


def test_hostile_frames_for_ids_that_are_no_stream_are_dropped(server):
    peer = Peer(server.address)
    # An id never used, and id 1, an ordinary call in flight: neither is a stream.
    peer.send([4, 4242, b"stray"], [5, 4242, 10, 1000], [6, 4242],
              [0, 1, "Bench.Sleep", [200]], [4, 1, b"x"], [5, 1, 1, 1], [6, 1])
    sleep, _ = peer.read_until(lambda m: m[:2] == [1, 1])
    assert sleep[2:4] == [None, 200]
    # And a stream that has ended.
    peer.send([0, 3, "Bench.Stream", [1, 4], {"rpc-stream": 1}])
    end, before = peer.read_until(is_end(3))
    assert end[2] is None and len(elements(before, 3)) == 1
    peer.send([5, 3, 5, 100], [4, 3, b"late"], [6, 3], [3, 3])
    result, between = peer.call(4, "Bench.Echo", "alive")
    assert result == "alive" and between == []
    peer.close()


def test_hostile_cancel_mid_stream_stops_its_elements(server):
    peer = Peer(server.address)
    peer.send([0, 1, "Bench.Stream", [1_000_000, 64], {"rpc-stream": 1, "rpc-credit": [8, 1 << 20]}])
    granted, got = 8, 0
    while got < 40:
        message = peer.read()
        assert message is not None, "the stream stalled"
        if message[0] == 4:
            assert message[1] == 1 and index_of(message[2]) == got
            got += 1
            if got % 4 == 0:
                peer.send([5, 1, 4, 4 * body_size(message)])
                granted += 4
    # The credit after the cancel must be dropped: the stream is gone by then.
    peer.send([3, 1], [5, 1, 1000, 1 << 24])
    _, before = peer.call(2, "rpc.ping")
    after = before + peer.read_for(0.5)
    assert got + len(elements(after, 1)) <= granted, \
        f"{got} elements before the cancel, {len(elements(after, 1))} after, {granted} granted"
    # The server may skip the end; if it sends one, nothing follows it, and it is no success.
    mine = [m for m in after if m[1] == 1]
    ends = [i for i, m in enumerate(mine) if m[0] == 1]
    assert ends in ([], [len(mine) - 1]), f"frames for sid 1 around its end: {mine[-5:]!r}"
    assert not ends or mine[-1][2] is not None, f"a cancelled stream ended well: {mine[-1]!r}"
    assert [m for m in peer.read_for(0.3) if m[1] == 1] == []
    result, _ = peer.call(3, "Bench.Echo", "after")
    assert result == "after"
    peer.close()


@pytest.mark.parametrize("credit,size,most", [
    ([3, 1 << 20], 16, 3),   # bound by messages
    ([100, 50], 30, 2),      # bound by bytes: 35 bytes an element, the second one overshoots
    (None, 16, 16),          # no rpc-credit: 16 messages and 65536 bytes
], ids=["messages", "bytes", "default"])
def test_hostile_a_reader_that_never_grants_gets_only_its_window(server, credit, size, most):
    peer = Peer(server.address)
    ext = {"rpc-stream": 1} if credit is None else {"rpc-stream": 1, "rpc-credit": credit}
    peer.send([0, 1, "Bench.Stream", [100, size], ext])
    element, before = peer.read_until(lambda m: m[0] in (1, 4) and m[1] == 1)
    first = before + [element] + peer.read_for(0.5)  # time to overrun the window, were it to
    result, between = peer.call(2, "Bench.Echo", "answered meanwhile")
    assert result == "answered meanwhile"
    stalled = first + between + peer.read_for(0.3)
    got = elements(stalled, 1)
    assert 1 <= len(got) <= most, f"{len(got)} elements sent on a window of {credit or 'default'}"
    assert not [m for m in stalled if is_end(1)(m)], "the stream ended while stalled"
    # Credit again, and the rest flows: it was the window that held it.
    peer.send([5, 1, 1000, 1 << 24])
    end, rest = peer.read_until(is_end(1))
    assert end[2] is None, end
    indices = [index_of(m[2]) for m in got + elements(rest, 1)]
    assert indices == list(range(100))
    peer.close()


def test_hostile_a_deadline_mid_stream_ends_it_with_code_4(server):
    peer = Peer(server.address)
    start = time.monotonic()
    peer.send([0, 1, "Bench.Stream", [1000, 16],
               {"rpc-stream": 1, "rpc-credit": [2, 1 << 20], "rpc-timeout-us": 200_000}])
    end, before = peer.read_until(is_end(1), timeout=3.0)  # never granting: it stalls at 2
    elapsed = time.monotonic() - start
    assert end[2] is not None and end[2][0] == 4, end
    assert 0.15 < elapsed < 2.0, f"ended after {elapsed:.2f} s"
    assert len(elements(before, 1)) <= 2
    result, _ = peer.call(2, "Bench.Echo", "after")
    assert result == "after"
    peer.close()
