"""Minimal Python client for the SwiftRPC wire protocol v1.

Frames are a 4-byte big-endian length followed by exactly one MessagePack array:

    Request      [0, msgid, method, params, ext?]
    Response     [1, msgid, error, result, ext?]
    Notification [2, method, params, ext?]
    Cancel       [3, msgid]

and, for streams (many elements in one or both directions, on the same connection):

    Element      [4, sid, value, ext?]
    Credit       [5, sid, messages, bytes, ext?]
    Half-close   [6, sid]

A stream opens with a request whose ext holds ``rpc-stream`` and ends with one response:

    with client.server_stream("Bench.Stream", 100, 1024) as stream:
        for element in stream:          # each one grants credit back as it is taken
            ...
    upload = client.client_stream("Bench.Upload")
    for chunk in chunks:
        upload.send(chunk)              # waits while the server's credit is used up
    reply = upload.close_and_receive()  # half-close, then the server's reply

The same frames run over TCP, TLS 1.3 (ALPN ``swiftrpc/1``) or a Unix socket:

    Client("127.0.0.1", 7070)                                   # TCP
    Client.connect("unix:/run/rpc.sock")                        # Unix socket
    Client.connect("unix:@rpc")                                 # Linux abstract socket
    Client.connect("localhost:7443",                            # mutual TLS
                   ssl_context=tls_context("ca.pem", "client.pem", "client.key"))

Only the standard library and PyPI ``msgpack`` are used. A ``Client`` is not
thread-safe: use one per thread (or guard it with your own lock). Its streams share it,
so they are used from the client's thread too.
"""

import argparse
import collections
import socket
import ssl
import struct
import time

import msgpack

__all__ = ["Client", "Stream", "RPCError", "ProtocolError", "tls_context", "parse_target",
           "open_stream", "SERVER_STREAMING", "CLIENT_STREAMING", "BIDIRECTIONAL", "DEFAULT_CREDIT"]

REQUEST, RESPONSE, NOTIFICATION, CANCEL = 0, 1, 2, 3
ELEMENT, CREDIT, HALF_CLOSE = 4, 5, 6
SERVER_STREAMING, CLIENT_STREAMING, BIDIRECTIONAL = 1, 2, 3  # the values of ext "rpc-stream"
DEFAULT_CREDIT = (16, 65536)  # (messages, bytes): the window a server assumes without rpc-credit
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

    Streams (``server_stream``, ``client_stream``, ``bidi_stream``) share the
    connection with calls: whichever operation is reading routes every frame
    to its call or stream by id, so calls keep working while streams are open.
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
        self._streams = {}  # sid -> Stream, for the streams in flight

    # -- lifecycle ---------------------------------------------------------

    def close(self):
        """Close the connection (idempotent); a TLS one says close_notify first. Streams
        still open end with ``ConnectionError``."""
        if self._sock is not None:
            _close_notify(self._sock)
            self._sock.close()
            self._sock = None
        for stream in list(self._streams.values()):
            stream._end(error=ConnectionError("connection closed"))

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

    # -- streams -----------------------------------------------------------

    def server_stream(self, method, *params, credit=DEFAULT_CREDIT, metadata=None, timeout=None):
        """Open a server-streaming call: one request, many response elements.

        Returns a ``Stream`` to iterate over. ``credit`` is the window ``(messages,
        bytes)`` the server may send ahead of the consumer; the stream grants it back
        as elements are taken, so an unread stream holds at most about one window.
        ``metadata`` is user metadata for the open (string keys, str or bytes values);
        ``timeout`` (seconds) bounds the whole stream, on the server (sent as
        ``rpc-timeout-us``) and here. Errors (an unknown method, bad params, the
        deadline) are raised as ``RPCError`` by the iteration.
        """
        return self._open_stream(SERVER_STREAMING, method, params, credit, metadata, timeout)

    def client_stream(self, method, *params, metadata=None, timeout=None):
        """Open a client-streaming call: many request elements, one reply.

        Returns a ``Stream``: ``send`` each element, then ``close_and_receive()`` for
        the reply. ``metadata`` and ``timeout`` are as for ``server_stream``.
        """
        return self._open_stream(CLIENT_STREAMING, method, params, None, metadata, timeout)

    def bidi_stream(self, method, *params, credit=DEFAULT_CREDIT, metadata=None, timeout=None):
        """Open a bidirectional stream: ``send`` elements and iterate over the ones
        received, then ``half_close()`` and iterate to the end. The arguments are as for
        ``server_stream``. This client is synchronous, so interleave sending and
        receiving: a peer that answers each element stops reading once its answers
        fill ``credit``, and a ``send`` would then wait for credit that never comes.
        """
        return self._open_stream(BIDIRECTIONAL, method, params, credit, metadata, timeout)

    def _open_stream(self, kind, method, params, credit, metadata, timeout):
        ext = dict(metadata or {})
        for key in ("rpc-stream", "rpc-credit", "rpc-timeout-us"):
            if key in ext:  # the stream's bookkeeping depends on them: set by the arguments
                raise ValueError(f"metadata key {key!r} is set by the stream's own arguments")
        ext["rpc-stream"] = kind
        window = (0, 0)  # a client-streaming call takes no elements from the server
        if kind != CLIENT_STREAMING:
            window = _check_credit(credit)
            ext["rpc-credit"] = list(window)
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"timeout must be positive, got {timeout!r}")
            ext["rpc-timeout-us"] = max(1, round(timeout * 1_000_000))
            deadline = time.monotonic() + timeout
        sid = self._alloc_id(())
        frame = self._encode([REQUEST, sid, method, list(params), ext])
        stream = Stream(self, sid, kind, method, window, deadline)
        self._streams[sid] = stream
        try:
            self._send([frame])
        except BaseException:
            self._streams.pop(sid, None)  # never opened
            raise
        return stream

    # -- internals ---------------------------------------------------------

    def _alloc_id(self, in_use):
        """Next msgid below 2**32, wrapping around and skipping ids in ``in_use``, ids of
        open streams, and ids whose late reply may still come."""
        for _ in range(MSGID_LIMIT):
            msgid = self._next_id
            self._next_id = (msgid + 1) % MSGID_LIMIT
            if msgid not in in_use and msgid not in self._abandoned and msgid not in self._streams:
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
                msg, size = self._read_message(deadline)
                if self._route(msg, size):
                    continue  # a stream's frame, kept by its stream for its reader
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

    def _pump(self, deadline):
        """Read one frame and route it, for a stream waiting on the connection. A reply
        that is no stream's is late (its call was cancelled or timed out): no call can
        be waiting while a stream is, since a Client is used from one thread."""
        msg, size = self._read_message(deadline)
        if not self._route(msg, size):
            self._abandoned.discard(msg[1])

    def _route(self, msg, size):
        """Hand a stream's frame to its stream; return False for a reply that is not a
        stream's (the caller's to match). Elements and credit for ids no stream holds
        (one that ended or was cancelled) are dropped, as the spec asks."""
        kind, sid = msg[0], msg[1]
        stream = self._streams.get(sid)
        if kind == RESPONSE:
            if stream is None:
                return False
            stream._on_end(msg)
        elif stream is not None:
            if kind == ELEMENT:
                stream._on_element(msg, size)
            else:
                stream._on_credit(msg)
        return True

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
        """Return the next message (a response, element or credit) as a list and its body
        length (what byte credit counts); close the connection on protocol errors."""
        while True:
            if len(self._buf) >= 4:
                (size,) = _HEADER.unpack_from(self._buf)
                if not 1 <= size <= self.max_frame_size:
                    self._fail(f"bad frame length {size} (max {self.max_frame_size})")
                if len(self._buf) >= 4 + size:
                    body = bytes(self._buf[4:4 + size])
                    del self._buf[:4 + size]
                    return self._check(body), size
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
        if (not isinstance(msg, list) or len(msg) < 2 or msg[0] not in _SHORTEST
                or len(msg) < _SHORTEST[msg[0]]
                or not isinstance(msg[1], int) or not 0 <= msg[1] < MSGID_LIMIT):
            self._fail(f"unexpected message {msg!r:.200}")
        return msg

    def _fail(self, reason):
        self.close()
        raise ProtocolError(reason)


# What a server may send, by message type, and the fewest elements each holds.
_SHORTEST = {RESPONSE: 4, ELEMENT: 3, CREDIT: 4}


class Stream:
    """One stream on a ``Client``, made by ``server_stream``, ``client_stream`` or
    ``bidi_stream``:

        with client.server_stream("Bench.Stream", 1000, 64, credit=(8, 4096)) as s:
            sizes = [len(element) for element in s]
        s.trailing_metadata                      # {} when the server sent none

        bidi = client.bidi_stream("Bench.EchoStream")
        bidi.send(b"ping")
        assert next(bidi) == b"ping"
        bidi.half_close()
        assert list(bidi) == [] and bidi.result is None

    Every operation that waits reads the connection, routing frames of other streams
    and calls by id; each wait is bounded by the client's ``timeout`` (a ``TimeoutError``
    cancels the stream) and by the stream's own ``timeout`` (it ends the stream with
    ``RPCError`` code 4, whether the server or the client notices first). Leaving a
    ``with`` block cancels a stream that has not ended.

    Attributes, readable at any time:

    - ``sid``, ``kind`` (``SERVER_STREAMING``, ``CLIENT_STREAMING``, ``BIDIRECTIONAL``),
      ``method``;
    - ``leading_metadata``: the server's leading metadata, from its first credit frame
      (its acceptance); ``{}`` when the server sent an element or ended the stream before
      any credit frame; ``None`` while not known yet (see ``wait_accepted``);
    - ``ended``: the stream is over on the wire (elements already received can still be
      read); then ``error`` (an ``RPCError``, ``TimeoutError`` or ``ConnectionError``, or
      None), ``result`` (a client-streaming call's reply) and ``trailing_metadata`` (the
      end's ext; ``{}`` when it had none or the client ended the stream).
    """

    def __init__(self, client, sid, kind, method, window, deadline):
        self._client = client
        self.sid = sid
        self.kind = kind
        self.method = method
        self._deadline = deadline  # time.monotonic() value, or None
        # Receiving. The window is what the server may send ahead of the consumer. The
        # server's credit as we count it: an element beyond it is a violation. What the
        # consumer has taken since the last grant goes back to the server in one credit
        # frame once half the window is taken: granting on consumption, not on arrival,
        # is what bounds the unread elements buffered here.
        self._window = window
        self._recv_left = list(window)
        self._taken = [0, 0]
        self._inbox = collections.deque()  # (value, ext, body length)
        # Sending: the credit the server granted that this side has not used yet.
        self._accepted = False
        self._send_left = [0, 0]
        self._half_closed = False
        self.leading_metadata = None
        self.ended = False
        self.error = None
        self.result = None
        self.trailing_metadata = None

    def __repr__(self):
        state = "ended" if self.ended else "open"
        return f"<Stream {self.method} sid={self.sid} kind={self.kind} {state}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- receiving -----------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        item = self.receive()
        if item is None:
            raise StopIteration
        return item[0]

    def receive(self):
        """The next element as ``(value, metadata)`` (metadata: the element's ext, ``{}``
        when none), or None once the stream has ended successfully. Raises the stream's
        error once the elements received before it are read."""
        if self.kind == CLIENT_STREAMING:
            raise ValueError("a client-streaming call receives no elements: use close_and_receive()")
        self._wait(lambda: self._inbox)
        if self._inbox:
            value, metadata, size = self._inbox.popleft()
            self._grant(size)
            return value, metadata
        if self.error is not None:
            raise self.error
        return None

    def wait_accepted(self):
        """Wait until the server has accepted the stream (its first credit frame) or
        shown it will not send one (an element or the end came first); return
        ``leading_metadata``. An error end is not raised here: see ``error``."""
        self._wait(lambda: self.leading_metadata is not None)
        return self.leading_metadata

    # -- sending -------------------------------------------------------------

    def send(self, value, metadata=None):
        """Send one element (``metadata``: its per-element ext). Waits, reading the
        connection, until the server has accepted the stream and holds out credit: at
        least one message and one byte (one element may overshoot the bytes; the next
        one then waits for more). Raises the stream's error if it has ended with one,
        and ``EOFError`` if the server ended it successfully before the half-close
        (``close_and_receive`` then returns the reply)."""
        if self.kind == SERVER_STREAMING:
            raise ValueError("a server-streaming call takes no elements after its params")
        if self._half_closed:
            raise ValueError("send after half_close()")
        frame = self._client._encode(_with_ext([ELEMENT, self.sid, value], metadata))
        self._wait(lambda: self._accepted and self._send_left[0] >= 1 and self._send_left[1] >= 1)
        if self.ended:
            if self.error is not None:
                raise self.error
            raise EOFError(f"the server ended stream {self.sid} before the half-close")
        # Byte credit counts the frame's body, without its 4-byte length.
        self._send_left[0] -= 1
        self._send_left[1] -= len(frame) - _HEADER.size
        self._client._send([frame])

    def half_close(self):
        """Tell the server no more elements come (idempotent; nothing once ended). Waits
        for the server's acceptance first, like ``send``: a server that knows nothing of
        streams answers the open as a call, and would take a half-close frame, a type it
        does not know, as a reason to close the connection."""
        if self.kind == SERVER_STREAMING:
            raise ValueError("a server-streaming call has nothing to half-close")
        if self._half_closed:
            return
        self._wait(lambda: self._accepted)
        if self.ended:
            return
        self._half_closed = True
        self._client._send([self._client._encode([HALF_CLOSE, self.sid])])

    def close_and_receive(self):
        """Half-close a client-streaming call and return its reply (or raise its error)."""
        if self.kind != CLIENT_STREAMING:
            raise ValueError("close_and_receive() is for client-streaming calls: "
                             "half_close() a bidirectional stream and iterate to its end")
        self.half_close()
        self._wait(lambda: False)  # until the end
        if self.error is not None:
            raise self.error
        return self.result

    # -- ending ----------------------------------------------------------------

    def cancel(self):
        """Give up: tell the server (``[3, sid]``) and drop what is buffered; later
        operations raise ``RPCError`` code 1. Nothing happens once the stream has ended."""
        if self.ended:
            return
        self._abort(RPCError(1, "cancelled by the client"))
        self._inbox.clear()

    def close(self):
        """Release the stream: cancel it unless it has ended. Not a half-close: a
        client-streaming call ends well with ``close_and_receive()``."""
        self.cancel()

    # -- internals: called while routing frames ----------------------------

    def _wait(self, ready):
        """Read the connection until ``ready()`` or the stream ends, bounded as the class
        docstring says."""
        client = self._client
        bound = None if client.timeout is None else time.monotonic() + client.timeout
        while not self.ended and not ready():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._abort(RPCError(4, "deadline exceeded"))
                return
            until = min((t for t in (bound, self._deadline) if t is not None), default=None)
            try:
                client._pump(until)
            except TimeoutError as exc:
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    continue  # the stream's deadline, not the client's: ends it above
                self._abort(exc)
                raise
            except KeyboardInterrupt:
                self.cancel()
                raise

    def _grant(self, size):
        """The consumer took an element of ``size`` body bytes: give credit back once half
        the window (in messages or in bytes) is taken."""
        if self.ended:
            return  # nothing flows after the end
        self._taken[0] += 1
        self._taken[1] += size
        messages, nbytes = self._window
        if 2 * self._taken[0] < messages and 2 * self._taken[1] < nbytes:
            return
        grant, self._taken = self._taken, [0, 0]
        self._recv_left[0] += grant[0]
        self._recv_left[1] += grant[1]
        try:
            self._client._send([self._client._encode([CREDIT, self.sid, grant[0], grant[1]])])
        except OSError:
            pass  # the connection is gone and close() ended the stream; keep this element

    def _on_element(self, msg, size):
        messages, nbytes = self._recv_left
        if messages < 1 or nbytes < 1:
            self._abort(RPCError(8, f"the server sent an element on stream {self.sid} beyond "
                                    f"the credit granted"))
            return
        # An overshoot of the bytes is forgiven rather than owed: the spec does not say
        # which, and the lenient reading accepts a server that reads it either way.
        self._recv_left = [messages - 1, max(0, nbytes - size)]
        if self.leading_metadata is None:
            self.leading_metadata = {}
        self._inbox.append((msg[2], _ext_of(msg, 3), size))

    def _on_credit(self, msg):
        messages, nbytes = msg[2], msg[3]
        if not (_is_count(messages) and _is_count(nbytes)):
            self._abort(RPCError(13, f"malformed credit frame {msg!r:.100}"))
            return
        if not self._accepted:
            self._accepted = True
            if self.leading_metadata is None:
                self.leading_metadata = _ext_of(msg, 4)
        self._send_left[0] += messages
        self._send_left[1] += nbytes

    def _on_end(self, msg):
        outcome = _outcome(msg[2], msg[3])
        if isinstance(outcome, RPCError):
            self._end(error=outcome, trailing=_ext_of(msg, 4))
        else:
            self._end(result=outcome, trailing=_ext_of(msg, 4))

    def _abort(self, error):
        """End the stream here with ``error`` and tell the server. Its end response may
        still come, so the id stays out of reuse until it does."""
        self._end(error=error)
        self._client._abandoned.add(self.sid)
        try:
            self._client._send([self._client._encode([CANCEL, self.sid])])
        except OSError:
            pass  # the connection is gone: nothing more flows anyway

    def _end(self, error=None, result=None, trailing=None):
        self.ended = True
        self.error = error
        self.result = result
        self.trailing_metadata = trailing if trailing is not None else {}
        if self.leading_metadata is None:
            self.leading_metadata = {}
        self._client._streams.pop(self.sid, None)


def _check_credit(credit):
    """A window ``(messages, bytes)``, both at least 1 (a zero would stall the stream)."""
    try:
        messages, nbytes = credit
    except (TypeError, ValueError):
        raise ValueError(f"credit must be (messages, bytes), got {credit!r}") from None
    if not (_is_count(messages) and _is_count(nbytes) and messages >= 1 and nbytes >= 1):
        raise ValueError(f"credit must be two integers of at least 1, got {credit!r}")
    return messages, nbytes


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def _ext_of(msg, index):
    """The ext map at ``msg[index]``, ``{}`` when absent (or, leniently, not a map)."""
    ext = msg[index] if len(msg) > index else None
    return ext if isinstance(ext, dict) else {}


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
