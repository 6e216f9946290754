"""TLS against a `rpcbench serve` of the test's own, with the throw-away certificates of
scripts/make-test-certs.sh (the `certs` fixture in conftest.py).

The server comes from SWIFTRPC_BIN (scripts/interop-tests.sh sets it) and is started as

    rpcbench serve --port 0 --loops 1 --tls-cert server.pem --tls-key server.key \\
        [--tls-client-ca ca.pem]

printing "listening on 127.0.0.1:PORT" as today, and on stderr a line starting
"crpc: TLS data path". With --tls-client-ca, client certificates are required. The tests
skip, saying why, where SWIFTRPC_BIN is unset or its `serve --help` lists no --tls-cert.
Every refusal must be an error the client sees promptly, never a hang: each is bounded by
the client's timeout, and a timeout counts as a failure.
"""

import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import msgpack
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from swiftrpc_client import Client, tls_context  # noqa: E402

BIN = os.environ.get("SWIFTRPC_BIN")


def _serve_help():
    try:
        done = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return done.stdout + done.stderr


HELP = _serve_help() if BIN else ""
HAS_TLS = re.search(r"(?<![\w-])--tls-cert(?![\w-])", HELP) is not None
pytestmark = [
    pytest.mark.skipif(not BIN, reason="SWIFTRPC_BIN is not set (path of rpcbench)"),
    pytest.mark.skipif(bool(BIN) and not HAS_TLS,
                       reason="`rpcbench serve --help` lists no --tls-cert: this rpcbench has no TLS yet"),
]

TIMEOUT = 5.0  # every client here; a refusal must come well before it


class Server:
    """`rpcbench serve` on a free port; its output (stdout and stderr) is collected by a
    thread, so waiting for a line is bounded even if the server prints nothing."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "serve", "--port", "0", "--loops", "1", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines, self._eof, self._changed = [], False, threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for("listening on ", 20)
        if line is None:
            pytest.fail(f"the server did not start: {self.stop()}")
        host, _, port = line[len("listening on "):].rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)

    def _read(self):
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, prefix, timeout):
        """The first output line starting with ``prefix``, or None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                line = next((l for l in self.lines if l.startswith(prefix)), None)
                remaining = deadline - time.monotonic()
                if line is not None or self._eof or remaining <= 0:
                    return line
                self._changed.wait(remaining)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Stop the server; returns its output."""
        if self.alive():
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        self.proc.stdout.close()
        return "\n".join(self.lines)


def _tls_args(certs, name="server", client_ca=None):
    args = ["--tls-cert", certs.path(f"{name}.pem"), "--tls-key", certs.path(f"{name}.key")]
    if client_ca:
        args += ["--tls-client-ca", certs.path(f"{client_ca}.pem")]
    return args


def _serving(server):
    """A fixture's body: the server, checked still alive when the test is done."""
    try:
        yield server
        assert server.alive(), f"the server died: {server.stop()}"
    finally:
        server.stop()


@pytest.fixture
def mtls_server(certs):
    """A TLS server that requires client certificates issued by ca."""
    yield from _serving(Server(*_tls_args(certs, client_ca="ca")))


@pytest.fixture
def plain_server():
    yield from _serving(Server())


def _client(server, certs, ca="ca", cert="client", **kw):
    """A TLS client trusting ``ca`` and presenting ``cert`` (None: no certificate)."""
    if cert is None:
        context = tls_context(certs.path(f"{ca}.pem"))
    else:
        context = tls_context(certs.path(f"{ca}.pem"), certs.path(f"{cert}.pem"), certs.path(f"{cert}.key"))
    return Client(server.host, server.port, timeout=TIMEOUT, ssl_context=context, **kw)


def _assert_refused(attempt):
    """``attempt()`` must fail with a connection error (an alert, a reset, an EOF), never
    by timing out, and long before the client's timeout."""
    start = time.monotonic()
    with pytest.raises(OSError) as err:
        attempt()
    elapsed = time.monotonic() - start
    assert not isinstance(err.value, TimeoutError), f"no refusal within {TIMEOUT} s: {err.value!r}"
    assert elapsed < TIMEOUT - 1, f"the refusal took {elapsed:.1f} s"
    return err.value


def _call_once(server, certs, **kw):
    with _client(server, certs, **kw) as client:
        client.call("rpc.ping")


def _assert_serves(server, certs):
    with _client(server, certs) as client:
        assert client.call("Arith.Multiply", {"A": 6, "B": 7}) == 42


def _frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


# -- what works ----------------------------------------------------------------------

def test_mutual_tls_calls_get_the_right_results(mtls_server, certs):
    big = bytes(range(256)) * 400  # 100 KiB: many TLS records each way
    with _client(mtls_server, certs) as client:
        assert client.tls_version == "TLSv1.3"
        assert client._sock.selected_alpn_protocol() == "swiftrpc/1"
        assert client.call("rpc.ping") is None
        assert client.call("Arith.Multiply", {"A": 7, "B": 6}) == 42
        assert client.call("Arith.Divide", {"A": 7, "B": 2}) == {"Quo": 3, "Rem": 1}
        assert client.call("Bench.Echo", big) == big
        payloads = [f"tls-{i}-" + "z" * (i % 64) for i in range(1000)]
        assert client.call_many([("Bench.Echo", [p]) for p in payloads]) == payloads


def test_the_server_reports_its_tls_data_path(mtls_server):
    line = mtls_server.wait_for("crpc: TLS data path", 5)
    assert line is not None, f"no 'crpc: TLS data path' line in: {mtls_server.lines}"


def test_concurrent_tls_connections(mtls_server, certs):
    errors = []

    def work(n):
        try:
            with _client(mtls_server, certs) as client:
                for round_ in range(5):
                    values = [f"{n}-{round_}-{i}" for i in range(200)]
                    assert client.call_many([("Bench.Echo", [v]) for v in values]) == values
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_without_a_client_ca_no_client_certificate_is_needed(certs):
    server = Server(*_tls_args(certs))
    try:
        with _client(server, certs, cert=None) as client:
            assert client.call("Bench.Echo", "no client cert") == "no client cert"
        assert server.alive()
    finally:
        server.stop()


# -- what is refused ---------------------------------------------------------------------

@pytest.mark.parametrize("cert", [None, "other-client", "expired-client"],
                         ids=["no certificate", "other CA", "expired"])
def test_a_client_certificate_the_server_does_not_accept_is_refused(mtls_server, certs, cert):
    # TLS 1.3: the client's handshake ends before the server has judged its certificate,
    # so the refusal may come on the handshake or on the first read.
    _assert_refused(lambda: _call_once(mtls_server, certs, cert=cert))
    _assert_serves(mtls_server, certs)


def test_a_client_trusting_another_ca_fails_verification(mtls_server, certs):
    err = _assert_refused(lambda: _call_once(mtls_server, certs, ca="other-ca"))
    assert isinstance(err, ssl.SSLCertVerificationError), repr(err)
    _assert_serves(mtls_server, certs)


@pytest.mark.parametrize("name,reason", [
    ("other-server", "certificate"),  # unknown issuer (or its self-signed root)
    ("expired-server", "certificate has expired"),
    ("wrongname-server", "IP address mismatch"),
])
def test_a_server_certificate_the_client_does_not_accept_fails_verification(certs, name, reason):
    server = Server(*_tls_args(certs, name))
    try:
        err = _assert_refused(lambda: _call_once(server, certs))
        assert isinstance(err, ssl.SSLCertVerificationError), repr(err)
        assert reason in err.verify_message, err.verify_message
        assert server.alive(), server.stop()
    finally:
        server.stop()


def test_a_client_offering_another_alpn_protocol_is_refused(mtls_server, certs):
    context = tls_context(certs.path("ca.pem"), certs.path("client.pem"), certs.path("client.key"))
    context.set_alpn_protocols(["h2"])

    def attempt():
        with Client(mtls_server.host, mtls_server.port, timeout=TIMEOUT, ssl_context=context) as client:
            client.call("rpc.ping")

    _assert_refused(attempt)
    _assert_serves(mtls_server, certs)


def test_a_plaintext_client_on_the_tls_port_is_closed(mtls_server, certs):
    """No reply and no hang: the server ends the connection (a TLS alert may come first),
    and keeps serving TLS clients."""
    sock = socket.create_connection((mtls_server.host, mtls_server.port), timeout=TIMEOUT)
    sock.sendall(_frame([0, 1, "rpc.ping", []]))
    data, ending, start = b"", None, time.monotonic()
    while ending is None:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            ending = "reset"
        except socket.timeout:
            ending = "timeout"
        else:
            data += chunk
            ending = None if chunk else "eof"
    sock.close()
    assert ending != "timeout", f"the server kept a plaintext connection open {TIMEOUT} s"
    assert time.monotonic() - start < TIMEOUT - 1
    assert data == b"" or data[0] == 0x15, f"expected nothing or a TLS alert, got {data[:32]!r}"
    _assert_serves(mtls_server, certs)


def test_a_tls_client_on_a_plaintext_port_fails_cleanly(plain_server, certs):
    _assert_refused(lambda: _call_once(plain_server, certs))
    with Client(plain_server.host, plain_server.port, timeout=TIMEOUT) as client:
        assert client.call("Bench.Echo", "plain still") == "plain still"


def test_a_handshake_cut_short_does_not_hurt_the_server(mtls_server, certs):
    """Half a ClientHello then EOF, and half of one then a reset."""
    hello = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(certs.path("ca.pem")).wrap_bio(*hello, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    client_hello = hello[1].read()
    for reset in (False, True):
        sock = socket.create_connection((mtls_server.host, mtls_server.port), timeout=TIMEOUT)
        sock.sendall(client_hello[:len(client_hello) // 2])
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    _assert_serves(mtls_server, certs)
    assert mtls_server.alive()
