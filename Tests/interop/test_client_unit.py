"""Unit tests for the Python client against an in-process fake server.

The fake server runs in a thread on one end of a socketpair and answers out
of order, so msgid matching and error mapping are exercised without SwiftRPC.
Target strings, Unix sockets and TLS (a Python ``ssl`` server with the
certificates of scripts/make-test-certs.sh) are tested the same way.
"""

import os
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time

import msgpack
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import swiftrpc_client  # noqa: E402
from swiftrpc_client import Client, ProtocolError, RPCError, parse_target, tls_context  # noqa: E402


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


# -- target strings ---------------------------------------------------------------

@pytest.mark.parametrize("target,expected", [
    ("127.0.0.1:7070", ("tcp", ("127.0.0.1", 7070))),
    ("localhost:1", ("tcp", ("localhost", 1))),
    ("rpc.example.com:65535", ("tcp", ("rpc.example.com", 65535))),
    ("[::1]:7070", ("tcp", ("::1", 7070))),
    ("[fe80::1%eth0]:80", ("tcp", ("fe80::1%eth0", 80))),
    ("unix:/run/swiftrpc.sock", ("unix", "/run/swiftrpc.sock")),
    ("unix:relative/rpc.sock", ("unix", "relative/rpc.sock")),
    ("unix:@swiftrpc", ("unix", "\0swiftrpc")),
])
def test_parse_target(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", [
    "", "localhost", "localhost:", ":7070", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1",
    "127.0.0.1:http", "127.0.0.1:7 0", "127.0.0.1:\u0667", "::1:7070", "[::1]", "[::1]7070",
    "[]:7070", "[::1]]:7070", "unix:", "unix:@", "unix:/a\0b",
])
def test_parse_target_refuses(target):
    with pytest.raises(ValueError, match="bad target"):
        parse_target(target)


# -- servers that listen (TCP or Unix, optionally TLS) -----------------------------

class ListeningServer(FakeServer):
    """Accepts one connection on ``listener`` (TLS-wrapped with ``ssl_context``) and runs
    ``script(server)`` on it in a thread; the test makes its own client."""

    def __init__(self, script, listener, ssl_context=None, **wrap):
        self.listener, self.ssl_context, self.wrap = listener, ssl_context, wrap
        self.sock = self.client = self.error = None
        self.listener.settimeout(5.0)
        self.thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self.thread.start()

    def _serve(self, script):
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(5.0)
            self.sock = conn
            if self.ssl_context is not None:
                self.sock = self.ssl_context.wrap_socket(conn, server_side=True, **self.wrap)
            if script is not None:
                script(self)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self, expect_error=None):
        """Wait for the script; re-raise its error unless it is an ``expect_error``."""
        self.thread.join(5.0)
        assert not self.thread.is_alive(), "listening server script hung"
        for sock in (self.sock, self.listener):
            if sock is not None:
                sock.close()
        if self.error is not None and not (expect_error and isinstance(self.error, expect_error)):
            raise self.error
        return self.error


def _tcp_listener():
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, listener.getsockname()[1]


@pytest.fixture
def sock_dir():
    """A short directory for Unix socket paths (sun_path holds 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="rpc", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _unix_listener(address):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen()
    return listener


def _echo_twice(srv):
    srv.write(_arith(srv.read()))
    srv.write(_arith(srv.read()))


def test_connect_over_a_unix_socket_path(sock_dir):
    path = os.path.join(sock_dir, "rpc.sock")
    srv = ListeningServer(_echo_twice, _unix_listener(path))
    with Client.connect("unix:" + path) as client:
        assert client.call("Bench.Echo", "over unix") == "over unix"
        assert client.call_many([("Arith.Divide", [{"A": 9, "B": 4}])]) == [{"Quo": 2, "Rem": 1}]
        assert client.tls_version is None
    srv.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux-only")
def test_connect_over_an_abstract_unix_socket():
    name = f"swiftrpc-test-{os.getpid()}-{time.monotonic_ns()}"
    srv = ListeningServer(_echo_twice, _unix_listener("\0" + name))
    with Client.connect("unix:@" + name) as client:
        assert client.call("Bench.Echo", b"abstract") == b"abstract"
        assert client.call("Bench.Echo", 2) == 2
    srv.join()


def test_connect_over_tcp_target_and_missing_unix_socket(sock_dir):
    listener, port = _tcp_listener()
    srv = ListeningServer(_echo_twice, listener)
    with Client.connect(f"127.0.0.1:{port}", timeout=2.0) as client:
        assert client.call("Bench.Echo", 1) == 1
        assert client.call("Bench.Echo", 2) == 2
    srv.join()
    with pytest.raises(FileNotFoundError):
        Client.connect("unix:" + os.path.join(sock_dir, "absent.sock"))


# -- TLS ---------------------------------------------------------------------------

def _server_context(certs, name="server", client_ca="ca"):
    """A Python TLS 1.3 server speaking ALPN swiftrpc/1; with ``client_ca``, client
    certificates are required and checked against it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certs.path(f"{name}.pem"), certs.path(f"{name}.key"))
    context.set_alpn_protocols(["swiftrpc/1"])
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs.path(f"{client_ca}.pem"))
    return context


def _client_context(certs, ca="ca", cert="client"):
    if cert is None:
        return tls_context(certs.path(f"{ca}.pem"))
    return tls_context(certs.path(f"{ca}.pem"), certs.path(f"{cert}.pem"), certs.path(f"{cert}.key"))


def test_tls_context_settings(certs):
    context = _client_context(certs)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.protocol == ssl.PROTOCOL_TLS_CLIENT
    with pytest.raises(ValueError):
        tls_context(certs.path("ca.pem"), keyfile=certs.path("client.key"))


def test_tls_round_trip_with_a_client_certificate(certs):
    """Mutual TLS against a Python ssl server: ALPN swiftrpc/1 on both ends, the client's
    certificate seen by the server, and replies arriving in every shape the reading loop
    must handle: one frame cut over many tiny records, many frames in one record (buffered
    inside the SSLSocket, where select() cannot see them) and a frame over many records."""
    seen = {}
    big = b"\xab" * 100_000

    def script(srv):
        seen["alpn"] = srv.sock.selected_alpn_protocol()
        seen["peer"] = srv.sock.getpeercert()
        requests = [srv.read() for _ in range(300)]
        replies = [_arith(r) for r in reversed(requests)]
        srv.write(*replies[:20], chunk=7)  # each sendall is a record of 7 bytes
        srv.write(*replies[20:])
        srv.write(_arith(srv.read()))

    listener, port = _tcp_listener()
    srv = ListeningServer(script, listener, _server_context(certs))
    with Client("127.0.0.1", port, ssl_context=_client_context(certs)) as client:
        assert client.tls_version == "TLSv1.3"
        assert client._sock.selected_alpn_protocol() == "swiftrpc/1"
        payloads = [f"tls-{i}-" + "y" * (i % 40) for i in range(300)]
        assert client.call_many([("Bench.Echo", [p]) for p in payloads]) == payloads
        assert client.call("Bench.Echo", big) == big
    srv.join()
    assert seen["alpn"] == "swiftrpc/1"
    assert dict(x[0] for x in seen["peer"]["subject"])["commonName"] == "test-client"
    assert ("URI", "spiffe://swiftrpc.test/client") in seen["peer"]["subjectAltName"]


def test_tls_timeout_cancels_and_discards_late_reply(certs):
    def script(srv):
        slow = srv.read()
        assert srv.read() == [3, slow[1]]
        nxt = srv.read()
        srv.write(_reply(slow, "late"), _reply(nxt, "fresh"))

    listener, port = _tcp_listener()
    srv = ListeningServer(script, listener, _server_context(certs))
    with Client("localhost", port, timeout=0.2, ssl_context=_client_context(certs)) as client:
        with pytest.raises(TimeoutError):
            client.call("Bench.Echo", "slow")
        client.timeout = 5.0
        assert client.call("Bench.Echo", "fresh") == "fresh"
    srv.join()


def test_tls_close_sends_close_notify(certs):
    """The server sees an orderly TLS end, not a truncated stream."""
    ends = []

    def script(srv):
        srv.write(_arith(srv.read()))
        ends.append(srv.sock.recv(100))  # b"" on close_notify; SSLEOFError when truncated

    listener, port = _tcp_listener()
    srv = ListeningServer(script, listener, _server_context(certs), suppress_ragged_eofs=False)
    client = Client("127.0.0.1", port, ssl_context=_client_context(certs))
    assert client.call("Bench.Echo", 1) == 1
    client.close()
    client.close()
    srv.join()
    assert ends == [b""]


_UNKNOWN_ISSUER = ("unable to get local issuer certificate",
                   "self-signed certificate in certificate chain")  # the server sent its CA too


@pytest.mark.parametrize("server,ca,reasons", [
    ("other-server", "ca", _UNKNOWN_ISSUER),
    ("server", "other-ca", _UNKNOWN_ISSUER),
    ("expired-server", "ca", ("certificate has expired",)),
    ("wrongname-server", "ca", ("IP address mismatch",)),
])
def test_tls_client_refuses_a_bad_server_certificate(certs, server, ca, reasons):
    listener, port = _tcp_listener()
    srv = ListeningServer(None, listener, _server_context(certs, server))
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        Client("127.0.0.1", port, ssl_context=_client_context(certs, ca, cert=None))
    assert any(r in err.value.verify_message for r in reasons), err.value.verify_message
    srv.join(expect_error=OSError)  # the client's alert, or its reset


@pytest.mark.parametrize("cert", [None, "other-client", "expired-client"])
def test_a_client_the_server_refuses_gets_a_clean_error(certs, cert):
    """In TLS 1.3 the client finishes its handshake before the server checks the client's
    certificate: the refusal (an alert, or the connection closed) comes on the first
    read, as an OSError, never as a hang."""
    listener, port = _tcp_listener()
    srv = ListeningServer(None, listener, _server_context(certs))
    start = time.monotonic()
    with pytest.raises(OSError) as err:
        with Client("127.0.0.1", port, ssl_context=_client_context(certs, cert=cert)) as client:
            client.call("rpc.ping")
    assert not isinstance(err.value, TimeoutError)
    assert time.monotonic() - start < 4.0
    assert isinstance(srv.join(expect_error=ssl.SSLError), ssl.SSLError)


def test_tls_over_a_unix_socket(certs, sock_dir):
    nameless = os.path.join(sock_dir, "nameless.sock")
    with _unix_listener(nameless), pytest.raises(ValueError, match="server_hostname"):
        Client.connect("unix:" + nameless, ssl_context=_client_context(certs))
    path = os.path.join(sock_dir, "tls.sock")
    srv = ListeningServer(_echo_twice, _unix_listener(path), _server_context(certs))
    with Client.connect("unix:" + path, ssl_context=_client_context(certs), server_hostname="localhost") as client:
        assert client.call("Bench.Echo", "tls over unix") == "tls over unix"
        assert client.call("Bench.Echo", 2) == 2
    srv.join()


# -- the command line ----------------------------------------------------------------

def _answer_ping(srv):
    request = srv.read()
    assert request[2] == "rpc.ping"
    srv.write(_reply(request))


def test_main_pings_over_tls_and_unix(certs, sock_dir, capsys):
    listener, port = _tcp_listener()
    srv = ListeningServer(_answer_ping, listener, _server_context(certs))
    swiftrpc_client.main(["--target", f"127.0.0.1:{port}", "--tls-ca", certs.path("ca.pem"),
                          "--tls-cert", certs.path("client.pem"), "--tls-key", certs.path("client.key")])
    srv.join()
    assert capsys.readouterr().out.startswith("rpc.ping -> None in ")

    path = os.path.join(sock_dir, "cli.sock")
    srv = ListeningServer(_answer_ping, _unix_listener(path), _server_context(certs, client_ca=None))
    swiftrpc_client.main(["--target", "unix:" + path, "--tls-ca", certs.path("ca.pem"),
                          "--tls-server-name", "localhost"])
    srv.join()
    assert capsys.readouterr().out.startswith("rpc.ping -> None in ")

    listener, port = _tcp_listener()
    srv = ListeningServer(_answer_ping, listener)
    swiftrpc_client.main(["--port", str(port)])  # the old form
    srv.join()
    assert capsys.readouterr().out.startswith("rpc.ping -> None in ")


@pytest.mark.parametrize("argv", [
    [], ["--port", "1", "--target", "127.0.0.1:1"], ["--target", "unix:"],
    ["--target", "unix:/x.sock", "--tls-ca", "ca.pem"], ["--port", "1", "--tls-key", "k.pem"],
])
def test_main_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        swiftrpc_client.main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
