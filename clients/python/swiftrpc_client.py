"""Minimal Python client for the SwiftRPC wire protocol v1.

Frames are a 4-byte big-endian length followed by exactly one MessagePack array:

    Request      [0, msgid, method, params, ext?]
    Response     [1, msgid, error, result, ext?]
    Notification [2, method, params, ext?]
    Cancel       [3, msgid]

The same frames run over TCP, TLS 1.3 (ALPN ``swiftrpc/1``) or a Unix socket:

    Client("127.0.0.1", 7070)                                   # TCP
    Client.connect("unix:/run/rpc.sock")                        # Unix socket
    Client.connect("unix:@rpc")                                 # Linux abstract socket
    Client.connect("localhost:7443",                            # mutual TLS
                   ssl_context=tls_context("ca.pem", "client.pem", "client.key"))

Only the standard library and PyPI ``msgpack`` are used. A ``Client`` is not
thread-safe: use one per thread (or guard it with your own lock).
"""

import argparse
import socket
import ssl
import struct
import time

import msgpack

__all__ = ["Client", "RPCError", "ProtocolError", "tls_context", "parse_target", "open_stream"]

REQUEST, RESPONSE, NOTIFICATION, CANCEL = 0, 1, 2, 3
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
MSGID_LIMIT = 1 << 32
ALPN_PROTOCOL = "swiftrpc/1"
_HEADER = struct.Struct(">I")


class RPCError(Exception):
    """An error reply ``[code, message]``; codes follow gRPC status numbering."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"RPC error {self.code}: {self.message}"


class ProtocolError(ConnectionError):
    """The peer broke the framing or envelope rules; the connection is closed."""


class Client:
    """A synchronous connection to a SwiftRPC server.

    ``timeout`` bounds each ``call``/``call_many`` as a whole (seconds, ``None``
    waits forever). On timeout the outstanding calls are cancelled on the
    server and ``TimeoutError`` is raised; the connection stays usable and a
    late reply is discarded. ``max_frame_size`` limits frames in both
    directions.

    With ``ssl_context`` (see ``tls_context``) the connection is TLS, the
    server's certificate checked against ``server_hostname`` (default: ``host``);
    the handshake is bounded by ``timeout`` too. ``Client.connect`` takes a
    target string instead of a host and port, Unix sockets included.
    """

    def __init__(self, host, port, timeout=5.0, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 ssl_context=None, server_hostname=None):
        sock = open_stream((host, port), timeout, ssl_context, server_hostname)
        self._setup(sock, timeout, max_frame_size)

    @classmethod
    def connect(cls, target, timeout=5.0, max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                ssl_context=None, server_hostname=None):
        """Connect to a target string: ``host:port``, ``[v6addr]:port``,
        ``unix:/path`` or ``unix:@name`` (Linux abstract namespace)."""
        sock = open_stream(target, timeout, ssl_context, server_hostname)
        return cls.from_socket(sock, timeout, max_frame_size)

    @classmethod
    def from_socket(cls, sock, timeout=5.0, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        """Wrap an already connected stream socket (handy for tests)."""
        self = cls.__new__(cls)
        self._setup(sock, timeout, max_frame_size)
        return self

    def _setup(self, sock, timeout, max_frame_size):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.timeout = timeout
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._next_id = 0
        self._abandoned = set()  # ids cancelled or timed out whose reply may still come

    # -- lifecycle ---------------------------------------------------------

    def close(self):
        """Close the connection (idempotent); a TLS one says close_notify first."""
        if self._sock is not None:
            _close_notify(self._sock)
            self._sock.close()
            self._sock = None

    @property
    def tls_version(self):
        """The negotiated TLS version (``"TLSv1.3"``), or None on a plaintext connection."""
        return self._sock.version() if isinstance(self._sock, ssl.SSLSocket) else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- public API --------------------------------------------------------

    def call(self, method, *params, ext=None):
        """Call ``method`` with positional ``params``; return the result or raise RPCError."""
        result = self._run([(method, params, ext)])[0]
        if isinstance(result, RPCError):
            raise result
        return result

    def call_many(self, calls):
        """Pipeline ``calls`` (an iterable of ``(method, params)``) in one write.

        Replies may arrive in any order; they are matched by msgid. Returns the
        results in request order, with error replies as ``RPCError`` instances.
        The whole batch is written before any reply is read, so keep a batch
        within what the socket buffers can hold (a few MiB on loopback).
        """
        batch = []
        for method, params in calls:
            if not isinstance(params, (list, tuple)):
                raise TypeError(f"params for {method!r} must be a list or tuple")
            batch.append((method, params, None))
        return self._run(batch)

    def notify(self, method, *params, ext=None):
        """Send a one-way notification; the server never answers it."""
        self._send([self._encode(_with_ext([NOTIFICATION, method, list(params)], ext))])

    def cancel(self, msgid):
        """Tell the server the caller gave up on ``msgid``; any later reply is dropped."""
        self._abandoned.add(msgid)
        self._send([self._encode([CANCEL, msgid])])

    # -- internals ---------------------------------------------------------

    def _alloc_id(self, in_use):
        """Next msgid below 2**32, wrapping around and skipping ids in ``in_use``."""
        for _ in range(MSGID_LIMIT):
            msgid = self._next_id
            self._next_id = (msgid + 1) % MSGID_LIMIT
            if msgid not in in_use and msgid not in self._abandoned:
                return msgid
        raise RPCError(8, "no free msgid")

    def _run(self, calls):
        """Send requests in one write, then collect their replies by msgid."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        slots, frames = {}, []
        for index, (method, params, ext) in enumerate(calls):
            msgid = self._alloc_id(slots)
            frames.append(self._encode(_with_ext([REQUEST, msgid, method, list(params)], ext)))
            slots[msgid] = index
        self._send(frames)
        results = [None] * len(calls)
        try:
            while slots:
                msg = self._read_message(deadline)
                msgid = msg[1]
                if msgid in slots:
                    results[slots.pop(msgid)] = _outcome(msg[2], msg[3])
                else:
                    self._abandoned.discard(msgid)  # late reply to a cancelled call
        except (TimeoutError, KeyboardInterrupt):
            if self._sock is not None:
                for msgid in list(slots):
                    self.cancel(msgid)
            raise
        return results

    def _encode(self, message):
        """Frame ``message``; refuse oversized ones before anything is written."""
        body = msgpack.packb(message, use_bin_type=True)
        if len(body) > self.max_frame_size:
            raise RPCError(8, f"frame of {len(body)} bytes exceeds max_frame_size {self.max_frame_size}")
        return _HEADER.pack(len(body)) + body

    def _send(self, frames):
        if self._sock is None:
            raise ConnectionError("connection is closed")
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(b"".join(frames))
        except OSError:  # a partial write would desynchronise the stream
            self.close()
            raise

    def _read_message(self, deadline):
        """Return the next response as a list; close the connection on protocol errors."""
        while True:
            if len(self._buf) >= 4:
                (size,) = _HEADER.unpack_from(self._buf)
                if not 1 <= size <= self.max_frame_size:
                    self._fail(f"bad frame length {size} (max {self.max_frame_size})")
                if len(self._buf) >= 4 + size:
                    body = bytes(self._buf[4:4 + size])
                    del self._buf[:4 + size]
                    return self._check(body)
            self._fill(deadline)

    def _fill(self, deadline):
        # The wait is the socket's own timeout, never select(): that is what makes TLS
        # right too. An SSLSocket's recv returns plaintext it already decrypted before it
        # touches the socket (select() cannot see that buffer), and when a readable socket
        # holds only part of a record (or a post-handshake message) it waits again itself,
        # within the same timeout. It returns at most one record (16 KiB) per call.
        if self._sock is None:
            raise ConnectionError("connection is closed")
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("RPC timed out")
            self._sock.settimeout(remaining)
        else:
            self._sock.settimeout(None)
        try:
            chunk = self._sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("RPC timed out") from None
        except OSError:  # ssl.SSLError too: a TLS alert (e.g. a refused certificate) ends it
            self.close()
            raise
        if not chunk:  # EOF, or a TLS close_notify
            self.close()
            raise ConnectionError("connection closed by server")
        self._buf += chunk

    def _check(self, body):
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:
            self._fail(f"undecodable frame: {exc}")
        if (not isinstance(msg, list) or len(msg) < 4 or msg[0] != RESPONSE
                or not isinstance(msg[1], int) or not 0 <= msg[1] < MSGID_LIMIT):
            self._fail(f"unexpected message {msg!r:.200}")
        return msg

    def _fail(self, reason):
        self.close()
        raise ProtocolError(reason)


def tls_context(cafile=None, certfile=None, keyfile=None):
    """A client ``ssl.SSLContext`` for SwiftRPC: TLS 1.3 or later, ALPN ``swiftrpc/1``,
    the server's certificate verified (and its name checked) against ``cafile`` or,
    without one, the system's trusted CAs. ``certfile``/``keyfile`` (PEM) is the client's
    certificate chain for mutual TLS. A context made by hand should offer the same ALPN
    protocol (``set_alpn_protocols(["swiftrpc/1"])``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and names
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN_PROTOCOL])
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    elif keyfile:
        raise ValueError("keyfile without certfile")
    return context


def parse_target(target):
    """Split a target string into ``("tcp", (host, port))`` or ``("unix", address)``.

    ``host:port`` and ``[v6addr]:port`` are TCP; ``unix:/path`` (or a relative path) is a
    Unix socket and ``unix:@name`` the Linux abstract socket ``"\\0name"``. Raises
    ValueError for anything else, an unbracketed IPv6 address included.
    """
    if not isinstance(target, str) or not target:
        raise ValueError(f"bad target {target!r}: want host:port, [v6addr]:port or unix:/path")
    if target.startswith("unix:"):
        path = target[len("unix:"):]
        if path in ("", "@"):
            raise ValueError(f"bad target {target!r}: the Unix socket path is empty")
        if "\0" in path:
            raise ValueError(f"bad target {target!r}: NUL in the Unix socket path")
        return "unix", ("\0" + path[1:] if path.startswith("@") else path)
    if target.startswith("["):
        host, sep, port = target[1:].partition("]:")
        if not sep or not host or "]" in host:
            raise ValueError(f"bad target {target!r}: want [v6addr]:port")
    else:
        host, sep, port = target.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad target {target!r}: want host:port")
        if ":" in host:
            raise ValueError(f"bad target {target!r}: put an IPv6 address in brackets, [{host}]:{port}")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"bad target {target!r}: port {port!r} is not 1-65535")
    return "tcp", (host, int(port))


def open_stream(target, timeout=5.0, ssl_context=None, server_hostname=None):
    """A connected stream socket for ``target`` (a target string, or a ``(host, port)``
    pair), TLS-wrapped when ``ssl_context`` is given. Connecting and the TLS handshake are
    each bounded by ``timeout``; a failed handshake raises ``ssl.SSLError`` (a
    certificate the context rejects: ``ssl.SSLCertVerificationError``)."""
    if isinstance(target, tuple):
        kind, address = "tcp", target
    else:
        kind, address = parse_target(target)
    if kind == "tcp":
        sock = socket.create_connection(address, timeout=timeout)
        name = server_hostname or address[0]
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name = server_hostname
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
    if ssl_context is None:
        return sock
    try:
        if name is None and ssl_context.check_hostname:
            raise ValueError("TLS over a Unix socket needs server_hostname (a name in the server's certificate)")
        return ssl_context.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()  # harmless when a failed handshake already closed it
        raise


def _close_notify(sock):
    """Best effort: end a TLS connection with close_notify, so the server sees an orderly
    end (like a plaintext FIN) rather than a truncated stream. Non-blocking, so it never
    waits for the server's own close_notify: unwrap() then raises SSLWantReadError."""
    if not isinstance(sock, ssl.SSLSocket):
        return
    try:
        sock.setblocking(False)
        sock.unwrap()
    except (OSError, ValueError):  # want-read, a peer already gone, a handshake never done
        pass


def _with_ext(message, ext):
    """Append ``ext`` only when non-empty (the spec omits an empty ext)."""
    if ext:
        message.append(dict(ext))
    return message


def _outcome(error, result):
    """Map a response's ``error``/``result`` pair to a value or an RPCError."""
    if error is None:
        return result
    if isinstance(error, (list, tuple)) and len(error) >= 2:
        return RPCError(error[0], error[1])
    return RPCError(2, f"malformed error: {error!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Ping a SwiftRPC server.",
        epilog="examples:\n"
               "  swiftrpc_client.py --port 7070\n"
               "  swiftrpc_client.py --target unix:/tmp/rpc.sock\n"
               "  swiftrpc_client.py --target localhost:7443 --tls-ca ca.pem "
               "--tls-cert client.pem --tls-key client.key",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="server host (default: %(default)s)")
    parser.add_argument("--port", type=int, help="server port")
    parser.add_argument("--target", help="instead of --host/--port: host:port, [v6addr]:port, "
                        "unix:/path or unix:@abstract")
    parser.add_argument("--tls-ca", help="use TLS, trusting this CA file (PEM)")
    parser.add_argument("--tls-cert", help="use TLS with this client certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the key of --tls-cert (PEM; default: in --tls-cert)")
    parser.add_argument("--tls-server-name", help="use TLS; the name to check in the server's "
                        "certificate (default: the host)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if (args.target is None) == (args.port is None):
        parser.error("give either --port or --target")
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    tls = bool(args.tls_ca or args.tls_cert or args.tls_server_name)
    target = (args.host, args.port)
    if args.target is not None:
        try:
            kind, _ = parse_target(args.target)
        except ValueError as exc:
            parser.error(str(exc))
        if kind == "unix" and tls and not args.tls_server_name:
            parser.error("TLS over a Unix socket needs --tls-server-name")
        target = args.target
    context = tls_context(args.tls_ca, args.tls_cert, args.tls_key) if tls else None
    sock = open_stream(target, args.timeout, context, args.tls_server_name)
    with Client.from_socket(sock, timeout=args.timeout) as client:
        start = time.perf_counter()
        result = client.call("rpc.ping")
        elapsed_us = (time.perf_counter() - start) * 1e6
    print(f"rpc.ping -> {result!r} in {elapsed_us:.0f} us")


if __name__ == "__main__":
    main()
