"""Minimal Python client for the SwiftRPC wire protocol v1.

Frames are a 4-byte big-endian length followed by exactly one MessagePack array:

    Request      [0, msgid, method, params, ext?]
    Response     [1, msgid, error, result, ext?]
    Notification [2, method, params, ext?]
    Cancel       [3, msgid]

Only the standard library and PyPI ``msgpack`` are used. A ``Client`` is not
thread-safe: use one per thread (or guard it with your own lock).
"""

import argparse
import socket
import struct
import time

import msgpack

__all__ = ["Client", "RPCError", "ProtocolError"]

REQUEST, RESPONSE, NOTIFICATION, CANCEL = 0, 1, 2, 3
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
MSGID_LIMIT = 1 << 32
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
    """

    def __init__(self, host, port, timeout=5.0, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        sock = socket.create_connection((host, port), timeout=timeout)
        self._setup(sock, timeout, max_frame_size)

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
        """Close the connection (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

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
        except OSError:
            self.close()
            raise
        if not chunk:
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
    parser = argparse.ArgumentParser(description="Ping a SwiftRPC server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with Client(args.host, args.port) as client:
        start = time.perf_counter()
        result = client.call("rpc.ping")
        elapsed_us = (time.perf_counter() - start) * 1e6
    print(f"rpc.ping -> {result!r} in {elapsed_us:.0f} us")


if __name__ == "__main__":
    main()
