import Logging
import Synchronization

/// A connection to an RPC server, with typed calls.
///
/// ```swift
/// let client = try await RPCClient.connect(host: "127.0.0.1", port: 7000)
/// let product = try await client.call(Arith.multiply, .init(A: 7, B: 6))   // async
/// client.go(Arith.multiply, .init(A: 2, B: 3)) { result in                 // callback
///     print(result)   // success(6), on the client's event-loop thread
/// }
/// ```
///
/// All methods are thread-safe. Calls are pipelined on the one connection; replies may
/// arrive in any order and are matched by sequence number.
public final class RPCClient: Sendable {
    /// Client settings.
    public struct Configuration: Sendable {
        /// How long connecting may take.
        public var connectTimeout: Duration
        /// The largest frame accepted or sent, in bytes.
        public var maxFrameSize: Int
        /// The loop the connection runs on; `nil` uses ``RPCEventLoop/shared()``.
        public var eventLoop: RPCEventLoop?
        /// The timeout of calls that set none themselves; `nil`: such calls wait for ever.
        /// A call's timeout travels to the server (which cancels the handler when it passes)
        /// and the client ends the call with `.deadlineExceeded` on its own too.
        public var defaultTimeout: Duration?
        /// After this long without hearing from the server, send it `rpc.ping`; `nil`: no
        /// heartbeats.
        public var heartbeatInterval: Duration?
        /// With heartbeats: after this long without a byte from the server it is declared
        /// dead, and every call pending on it fails at once with `.unavailable`. `nil`:
        /// three heartbeat intervals.
        public var deadAfter: Duration?
        /// When set, a lost connection is re-made with jittered exponential backoff between
        /// these delays, for as long as the client lives. Calls pending on the lost
        /// connection fail with `.unavailable`; calls made while it is down wait for the new
        /// one (up to their timeout), unless ``failFast`` is set.
        public var reconnect: ReconnectBackoff?
        /// With ``reconnect``: calls made while the connection is down fail at once with
        /// `.unavailable` instead of waiting for it.
        public var failFast: Bool
        /// TLS to the server (reconnects use it too); `nil`: plaintext. A server certificate
        /// that does not verify fails the connect with `.unavailable` and the reason, and
        /// stops a reconnecting client (it is not transient).
        public var tls: RPCTLSConfiguration? = nil
        /// How much the server may send ahead on a stream before this client, as its
        /// consumer takes elements, grants more (``RPCStreamOptions/window`` overrides it per
        /// stream). A slow consumer holds at most this much per stream.
        public var streamWindow: RPCStreamWindow = .default

        /// Settings with defaults: a 5 s connect timeout, 4 MiB frames, the shared loop, no
        /// default call timeout, no heartbeats, no reconnecting.
        public init(connectTimeout: Duration = .seconds(5), maxFrameSize: Int = 4 << 20,
                    eventLoop: RPCEventLoop? = nil, defaultTimeout: Duration? = nil,
                    heartbeatInterval: Duration? = nil, deadAfter: Duration? = nil,
                    reconnect: ReconnectBackoff? = nil, failFast: Bool = false, tls: RPCTLSConfiguration? = nil) {
            self.tls = tls
            self.connectTimeout = connectTimeout
            self.maxFrameSize = maxFrameSize
            self.eventLoop = eventLoop
            self.defaultTimeout = defaultTimeout
            self.heartbeatInterval = heartbeatInterval
            self.deadAfter = deadAfter
            self.reconnect = reconnect
            self.failFast = failFast
        }

        /// Where lifecycle events go (connect, close); nothing is logged per call.
        public var logger = Logger(label: "SwiftRPC.client")
        /// Run around every call, first outermost (see ``RPCClientInterceptor``).
        public var interceptors: [any RPCClientInterceptor] = []
        /// Client-wide metrics (pending calls, timeouts, late replies, reconnects) through
        /// swift-metrics, read from the core every ``RPCMetricsOptions/pollInterval``.
        public var metrics: RPCMetricsOptions = .automatic
        /// A `client` span per call, its context sent in the request metadata.
        public var tracing: RPCTracingOptions = .automatic

        /// Settings with defaults, plus interceptors (and metrics and tracing options).
        public init(connectTimeout: Duration = .seconds(5), defaultTimeout: Duration? = nil,
                    interceptors: [any RPCClientInterceptor],
                    metrics: RPCMetricsOptions = .automatic, tracing: RPCTracingOptions = .automatic) {
            self.init(connectTimeout: connectTimeout, defaultTimeout: defaultTimeout)
            self.interceptors = interceptors
            self.metrics = metrics
            self.tracing = tracing
        }
    }

    @usableFromInline let handle: ClientHandle
    /// Interceptors and tracing; nil when there are none, and calls take the direct path.
    @usableFromInline let pipeline: ClientPipeline?
    private let poller: Task<Void, Never>?
    let defaultTimeout: Duration?
    /// What the server may send ahead on each stream (unless the stream says otherwise).
    let streamWindow: RPCStreamWindow
    private let logger: Logger

    /// Connects, blocking the calling thread for at most the connect timeout. In async code
    /// prefer ``connect(host:port:configuration:)``.
    ///
    /// - Throws: `RPCError` (`.unavailable` when refused or unreachable, `.deadlineExceeded`
    ///   on timeout).
    public init(host: String, port: Int, configuration: Configuration = Configuration()) throws(RPCError) {
        let loop: RPCEventLoop
        if let chosen = configuration.eventLoop { loop = chosen } else { loop = try RPCEventLoop.shared() }
        let handle = try ClientHandle.connect(loop: loop, host: host, port: port, configuration: configuration)
        self.handle = handle
        defaultTimeout = configuration.defaultTimeout
        streamWindow = configuration.streamWindow
        logger = configuration.logger
        pipeline = ClientPipeline.make(configuration.interceptors, tracer: configuration.tracing.resolve())
        poller = configuration.metrics.resolve().map {
            ClientMetricsPoller.start(handle, factory: $0, options: configuration.metrics)
        }
        logger.debug("connected", metadata: ["address": "\(host):\(port)"])
    }

    /// Connects without blocking a task's thread: the connect runs on its own thread.
    public static func connect(host: String, port: Int,
                               configuration: Configuration = Configuration()) async throws(RPCError) -> RPCClient {
        // The client crosses threads through a lock as well as the continuation: the
        // continuation orders them, but ThreadSanitizer on Linux only sees the lock.
        let outcome = Locked<Result<RPCClient, RPCError>?>(nil)
        await withUnsafeContinuation { (cont: UnsafeContinuation<Void, Never>) in
            BlockingWork.run {
                let result = Result { () throws(RPCError) in
                    try RPCClient(host: host, port: port, configuration: configuration)
                }
                outcome.withLock { $0 = result }
                cont.resume()
            }
        }
        return try outcome.withLock { $0! }.get()
    }

    /// The event loop the connection runs on (also a `TaskExecutor`: tasks that prefer it
    /// await calls without a thread hop).
    public var eventLoop: RPCEventLoop { handle.loop }

    /// True while the connection is open.
    public var isConnected: Bool { handle.isConnected }

    /// Calls sent and not yet ended (a snapshot).
    public var pendingCount: Int { handle.pendingCount }

    /// The client's counters, as of now.
    public var statistics: RPCClientStatistics { handle.statistics }

    // MARK: Calls

    /// Starts a call and returns at once; `completion` runs exactly once with the reply or
    /// the failure. It runs on the client's event-loop thread (so it must not block), or on
    /// the calling thread before `go` returns when the call could not be sent at all. With
    /// client interceptors (or a tracer) configured, the call runs as a task behind them and
    /// `completion` runs on that task's thread.
    // Inlinable so it is specialized where it is called: the pending call's generic
    // metadata is then resolved once per call site, not looked up on every call.
    @inlinable @discardableResult
    public func go<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args,
        metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil,
        completion: @escaping @Sendable (Result<Reply, RPCError>) -> Void
    ) -> RPCCall {
        if let pipeline {
            return goIntercepted(pipeline, method, args, metadata: metadata, timeout: timeout, completion: completion)
        }
        // The reference the core will hold is taken here, where the new object's own is
        // visible, so the two fold into one: no retain and release per call.
        let pending = Unmanaged<PendingCall>.passRetained(
            CallbackPendingCall<Reply>(completion, succeed: { completion, reply in completion(.success(reply)) }))
        guard let id = sendArgs(method.name, args, metadata: metadata, timeout: timeout, pending: pending) else {
            return RPCCall(handle: nil, id: 0)
        }
        return RPCCall(handle: handle, id: id)
    }

    /// Calls `method` and waits for its reply. Cancelling the awaiting task cancels the call
    /// (it ends with `.cancelled` and the server is told).
    // Inlinable for the reason `go` is, and more: the continuation and the cancellation
    // handler are generic over the reply type too.
    @inlinable
    public func call<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args,
        metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil
    ) async throws(RPCError) -> Reply {
        if let pipeline {
            return try await intercepted(pipeline, method, args, metadata: metadata, timeout: timeout).value
        }
        return try await call(method, args, metadata: metadata, timeout: timeout, pending: .make(handle: handle))
    }

    @inlinable
    func call<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, metadata: RPCMetadata, timeout: Duration?,
        pending: AsyncPendingCall<Reply>
    ) async throws(RPCError) -> Reply {
        let result: Result<Reply, RPCError> = await _unsafeInheritExecutor_withTaskCancellationHandler {
            await withUnsafeContinuation { continuation in
                pending.install(continuation)
                if let id = sendArgs(method.name, args, metadata: metadata, timeout: timeout, pending: .passRetained(pending)) {
                    pending.sent(id)
                } // else it failed before it was sent, and is already delivered
            }
        } onCancel: {
            pending.cancel()
        }
        pending.acquireDelivery()
        return try result.get()
    }

    /// Calls `method` and returns its reply with the metadata the server sent back (the rpcx
    /// request/response metadata pair; request metadata goes in `metadata`).
    public func callWithMetadata<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args,
        metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil
    ) async throws(RPCError) -> RPCResponse<Reply> {
        if let pipeline { return try await intercepted(pipeline, method, args, metadata: metadata, timeout: timeout) }
        let pending = AsyncPendingCall<Reply>.make(handle: handle)
        pending.wantsMetadata = true
        let value = try await call(method, args, metadata: metadata, timeout: timeout, pending: pending)
        return RPCResponse(value: value, metadata: pending.responseMetadata)
    }

    /// Calls the method named `name` with one argument, decoding the reply as `Reply`.
    public func call<Args: Codable & Sendable, Reply: Codable & Sendable>(
        _ name: String, _ args: Args, as: Reply.Type = Reply.self,
        metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil
    ) async throws(RPCError) -> Reply {
        try await call(RPCMethod<Args, Reply>(name), args, metadata: metadata, timeout: timeout)
    }

    /// Sends a notification: oneway, never answered.
    ///
    /// - Throws: `RPCError` when it cannot be sent (not connected, too large, not encodable).
    public func notify<Args: Encodable>(_ name: String, _ args: Args, metadata: RPCMetadata = RPCMetadata()) throws(RPCError) {
        let writer = MessagePackWriter(initialCapacity: 256)
        do { try MessagePackEncoder().encodeParams(args, into: writer) } catch {
            throw RPCError(.invalidArgument, "cannot encode params for \(name): \(error)")
        }
        try writer.withUnsafeBytes { (params) throws(RPCError) in try handle.notify(name, params: params, metadata: metadata) }
    }

    /// Closes the connection; calls still pending end with `.unavailable`. Idempotent.
    public func close() {
        poller?.cancel()
        if handle.close() { logger.debug("closed") }
    }

    // MARK: The one path every call takes

    /// Sends a call: `send`, or `sendBytes` when the argument is raw bytes. Inlined where
    /// `Args` is known, so the test costs nothing: generic code cannot pass an `Args` that is
    /// `[UInt8]` on as one without copying it (a retain and a release per call).
    @inlinable
    func sendArgs<Args: Encodable>(
        _ name: String, _ args: Args, metadata: RPCMetadata, timeout: Duration?, pending: Unmanaged<PendingCall>
    ) -> UInt64? {
        if Args.self == [UInt8].self {
            return sendBytes(name, unsafeBitCast(args, to: [UInt8].self), metadata: metadata, timeout: timeout, pending: pending)
        }
        return send(name, args, metadata: metadata, timeout: timeout, pending: pending)
    }

    /// Encodes `[args]` into this thread's writer and hands the call to the core: the one
    /// path every call takes. `pending` carries the reference the core is to hold. Returns
    /// the call's id, or nil when it could not be sent: the pending call has then already
    /// ended, on this thread.
    @usableFromInline
    func send<Args: Encodable>(
        _ name: String, _ args: Args, metadata: RPCMetadata, timeout: Duration?, pending: Unmanaged<PendingCall>
    ) -> UInt64? {
        do {
            return try MessagePackEncoder().withParams(args) { submit(name, metadata, timeout, pending, params: $0) }
        } catch {
            pending.takeRetainedValue()
                .fail(RPCError(.invalidArgument, "cannot encode params for \(name): \(error)").neverSent())
            return nil
        }
    }

    /// `send` for raw bytes: `[bytes]` as the Codable encoder writes it (an array holding
    /// one bin), without going through it.
    @usableFromInline
    func sendBytes(
        _ name: String, _ bytes: [UInt8], metadata: RPCMetadata, timeout: Duration?, pending: Unmanaged<PendingCall>
    ) -> UInt64? {
        MessagePackEncoder.withBytesParams(bytes) { submit(name, metadata, timeout, pending, params: $0) }
    }

    /// Hands encoded `params` to the core as a call of `name`.
    private func submit(
        _ name: String, _ metadata: RPCMetadata, _ timeout: Duration?, _ pending: Unmanaged<PendingCall>,
        params: UnsafeRawBufferPointer
    ) -> UInt64? {
        let timeoutMicroseconds = (timeout ?? defaultTimeout).map { UInt64(clamping: max($0.microseconds, 1)) } ?? 0
        return handle.call(name, params: params, metadata: metadata, timeoutMicroseconds: timeoutMicroseconds, pending: pending)
    }
}

/// How a client backs off between reconnect attempts: the delay starts at `initial`,
/// doubles after each failed attempt up to `maximum`, and each wait is drawn at random from
/// the upper half of the current delay, so the clients of a server that went away do not
/// all come back at the same instant.
public struct ReconnectBackoff: Sendable, Hashable {
    /// The first delay.
    public var initial: Duration
    /// The cap on the delay.
    public var maximum: Duration

    /// A backoff from `initial` doubling up to `maximum` (defaults: 50 ms to 5 s).
    public init(initial: Duration = .milliseconds(50), maximum: Duration = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }
}

/// A client's counters.
public struct RPCClientStatistics: Sendable, Hashable {
    /// Calls sent and not yet ended.
    public var pending: Int
    /// Replies that arrived after their call had ended (timed out or cancelled): dropped.
    public var lateReplies: Int
    /// Calls ended by their timeout.
    public var timeouts: Int
    /// Lost connections re-made (with ``RPCClient/Configuration/reconnect``).
    public var reconnects: Int = 0
}

/// A call in flight, returned by ``RPCClient/go(_:_:metadata:timeout:completion:)``.
public struct RPCCall: Sendable {
    @usableFromInline let handle: ClientHandle?
    /// The call's id on its client (for logs; unique per client).
    public let id: UInt64

    @usableFromInline
    init(handle: ClientHandle?, id: UInt64) {
        self.handle = handle
        self.id = id
    }

    /// Gives up on the call: unless it has already ended, its completion runs with
    /// `.cancelled` and the server is told to cancel the handler.
    public func cancel() {
        guard let handle else { return }
        if id >= InterceptedCalls.firstID {
            handle.interceptedCalls.cancel(id)
        } else {
            handle.cancel(id)
        }
    }
}
