import Logging

/// An RPC server: handlers registered by `"Service.Method"`, served over io_uring (epoll
/// where io_uring is refused).
///
/// ```swift
/// let server = RPCServer(configuration: .init(port: 7000))
/// try server.register(Arith.multiply) { args, _ in args.A * args.B }
/// let port = try server.start()
/// // ... later
/// server.stop()
/// ```
///
/// Lifecycle: **configuring** (handlers may be registered) → ``start()`` → **running**
/// (the method table is frozen and read without locks) → ``stop()`` → **stopped**
/// (connections closed; handlers still running finish, their replies are dropped).
public final class RPCServer: Sendable {
    /// Server settings.
    public struct Configuration: Sendable {
        /// The address to listen on: a name or IPv4 address, an IPv6 address (`"::1"`; `"::"`
        /// listens on IPv4 too), or a Unix socket, `"unix:/run/app.sock"` or `"unix:@name"`
        /// (Linux's abstract namespace). A name listens on every address it resolves to
        /// (`"localhost"`: `::1` and `127.0.0.1`). A Unix socket file left by a dead server is
        /// replaced, a live server's is refused, and the file is removed at stop.
        public var host: String
        /// A Unix socket file's mode (`0o660`...); `nil` leaves it to the umask.
        public var unixSocketMode: Int? = nil
        /// TLS for every connection; `nil`: plaintext. See ``RPCServer/reloadTLS(_:)``.
        public var tls: RPCTLSConfiguration? = nil
        /// How much a client may send ahead on a stream before the handler, as it takes
        /// elements, grants more: a slow handler holds at most this much per stream.
        public var streamWindow: RPCStreamWindow = .default
        /// The port to listen on; 0 picks a free one (see ``RPCServer/start()``).
        public var port: Int
        /// Event-loop threads; 0 means one per online CPU.
        public var loops: Int
        /// When set, loop `i` is pinned to CPU `firstCPU + i`.
        public var firstCPU: Int?
        /// The largest frame accepted or sent, in bytes.
        public var maxFrameSize: Int
        /// Requests per connection running at once; beyond it requests get
        /// `.resourceExhausted` at once (default 4096). Notifications to async handlers are
        /// held to the same limit per connection; beyond it they are dropped.
        public var maxCallsInFlightPerConnection: Int = 4096
        /// Notification handlers (async) running at once across all connections; beyond it
        /// notifications are dropped, as past the per-connection limit (default 16,384). A
        /// connection's notification handlers are cancelled when it closes, so reconnecting
        /// does not get round the per-connection limit, and this bounds what many
        /// connections together can start.
        public var maxRunningNotifications: Int = 16_384
        /// Connections at once; beyond it new connections are closed (default 65,536). Lowered
        /// at start to what the process's descriptor limit allows beside the reserve (see
        /// ``RPCServer/limits``).
        public var maxConnections: Int = 65_536
        /// File descriptors the server leaves free for the rest of the process: the Swift
        /// runtime (libdispatch aborts the process when it cannot open a file) and the
        /// application. When accepting would eat into them the server stops accepting, and
        /// clients wait in the listen backlog until descriptors free up. `nil` (default): an
        /// eighth of the limit, at least 32 and at most 1,024; 0: none (accept until the
        /// kernel refuses, which a Swift process may not survive).
        public var descriptorReserve: Int? = nil
        /// Raise the process's soft descriptor limit to its hard limit at start (default
        /// true): a server's connections each take one.
        public var raiseDescriptorLimit: Bool = true
        /// Unsent reply bytes per connection before the server stops reading from it until
        /// they drain: a client that never reads cannot grow the server's memory (default
        /// 8 MiB).
        public var maxUnsentBytesPerConnection: Int = 8 << 20
        /// A connection that leaves a frame half-sent this long is closed (default 30 s).
        public var frameTimeout: Duration = .seconds(30)
        /// MessagePack nesting accepted in a message, counting the envelope (at most 32).
        public var maxDepth: Int = 32
        /// Metadata entries accepted per message (default 64).
        public var maxMetadataEntries: Int = 64
        /// How long a graceful shutdown (`run()` as a `Service`) lets running calls finish;
        /// also how long the calls of a client that half-closed its connection (or sent a
        /// frame that cannot be parsed after good ones) may still run before their replies
        /// are cut off: such a client is read no more, but what it sent before is answered.
        public var drainTimeout: Duration
        /// Where lifecycle events go (start, shutdown); nothing is logged per call.
        public var logger: Logger
        /// Run around every call, first outermost (see ``RPCServerInterceptor``). With
        /// none, calls pay nothing for the feature.
        public var interceptors: [any RPCServerInterceptor]
        /// Per-method metrics through swift-metrics (default: recorded when a backend is
        /// bootstrapped by the time the server starts).
        public var metrics: RPCMetricsOptions
        /// A span per call through swift-distributed-tracing (default: when a tracer is
        /// bootstrapped by the time the server starts).
        public var tracing: RPCTracingOptions
        /// Keep per-method call and error counts for the `rpc.stats` built-in (default on;
        /// an inline call costs one unlocked counter update).
        public var methodStatistics: Bool = true

        /// Settings with defaults: loopback, a free port, one loop per CPU, 4 MiB frames, a
        /// 10 s drain, no interceptors, plaintext.
        public init(host: String = "127.0.0.1", port: Int = 0, loops: Int = 0,
                    firstCPU: Int? = nil, maxFrameSize: Int = 4 << 20,
                    drainTimeout: Duration = .seconds(10),
                    logger: Logger = Logger(label: "SwiftRPC.server"),
                    interceptors: [any RPCServerInterceptor] = [],
                    metrics: RPCMetricsOptions = .automatic,
                    tracing: RPCTracingOptions = .automatic,
                    tls: RPCTLSConfiguration? = nil) {
            self.tls = tls
            self.interceptors = interceptors
            self.metrics = metrics
            self.tracing = tracing
            self.host = host
            self.port = port
            self.loops = loops
            self.firstCPU = firstCPU
            self.maxFrameSize = maxFrameSize
            self.drainTimeout = drainTimeout
            self.logger = logger
        }
    }

    private enum State {
        case configuring(Router)
        case running(ServerCore, port: Int)
        case stopped
    }

    /// The settings the server was made with.
    public let configuration: Configuration
    private let state: Locked<State>
    /// Records the server-wide gauges while running, when metrics are on.
    private let gaugePoller = Locked<Task<Void, Never>?>(nil)

    /// Creates a server; nothing listens until ``start()``.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        self.state = Locked(.configuring(Router()))
    }

    // MARK: Registration

    /// Registers an async handler for `method`. Each call runs as its own task, so calls
    /// run concurrently and reply in any order.
    ///
    /// - Throws: `RPCError` (`.invalidArgument`) when the name is ill-formed, reserved
    ///   (`rpc.`), already defined, or the server has started.
    public func register<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) async throws -> Reply
    ) throws(RPCError) {
        try add([HandlerFactory.typedAsync(method, handler)])
    }

    /// Registers a handler that runs on the event-loop thread with no hop to a task.
    /// It must be quick and never block; in exchange it costs no task or thread switch.
    ///
    /// - Throws: as ``register(_:_:)``.
    public func registerInline<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) throws -> Reply
    ) throws(RPCError) {
        try add([HandlerFactory.typedInline(method, handler)])
    }

    /// Registers a handler that brings its own encoding: it receives the raw MessagePack
    /// params array and returns exactly one encoded MessagePack value.
    ///
    /// - Throws: as ``register(_:_:)``.
    public func registerRaw(
        _ name: String,
        _ handler: @escaping @Sendable ([UInt8], RPCContext) async throws -> [UInt8]
    ) throws(RPCError) {
        try add([HandlerFactory.raw(name, handler)])
    }

    /// Registers a raw handler that runs on the event-loop thread: it sees the request's
    /// params array as bytes and answers with encoded bytes, or with a byte range of the
    /// params themselves, sent back without a copy (how `Bench.Echo` answers).
    ///
    /// - Throws: as ``register(_:_:)``.
    public func registerRawInline(
        _ name: String,
        _ handler: @escaping @Sendable (RPCRawRequest) throws -> RPCRawReply
    ) throws(RPCError) {
        try add([HandlerFactory.rawInline(name, handler)])
    }

    /// Registers a server-stream handler for `method`: it gets the opening arguments and a
    /// writer, and the stream ends when it returns (an error it throws ends it with that
    /// status). Each stream runs as its own task, cancelled when the client cancels, the
    /// stream's deadline passes or the connection drops; the writer then throws.
    ///
    /// Response metadata set before the first write travels as leading metadata, what is
    /// set afterwards as trailing metadata with the end.
    ///
    /// - Parameter onLoop: run the stream's task on the event loop that reads its
    ///   connection (it prefers that loop as its executor): each element goes straight into
    ///   the connection's output with no thread hop, several times faster for small
    ///   elements. The handler must then never block (as an inline call's must not): it
    ///   would hold up every connection of its loop. Default: a task like a call's.
    /// - Throws: as ``register(_:_:)``.
    public func register<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>, onLoop: Bool = false,
        _ handler: @escaping @Sendable (Args, RPCStreamWriter<Element>, RPCContext) async throws -> Void
    ) throws(RPCError) {
        try addStream(StreamHandler.server(method, onLoop: onLoop, handler))
    }

    /// Registers a client-stream handler for `method`: it gets the opening arguments and
    /// the client's elements, and its return value is the reply. The client sends nothing
    /// before the handler first reads (and then only within the server's
    /// ``Configuration/streamWindow``, granted again as the handler takes elements).
    ///
    /// - Parameter onLoop: as for server streams.
    /// - Throws: as ``register(_:_:)``.
    public func register<Args, Element, Reply>(
        _ method: RPCClientStreamMethod<Args, Element, Reply>, onLoop: Bool = false,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<Element>, RPCContext) async throws -> Reply
    ) throws(RPCError) {
        try addStream(StreamHandler.client(method, onLoop: onLoop, handler))
    }

    /// Registers a bidirectional handler for `method`: it gets the opening arguments, the
    /// client's elements and a writer; the stream ends when it returns. The inbound sequence
    /// ends at the client's half-close; the handler may go on writing after it.
    ///
    /// - Parameter onLoop: as for server streams.
    /// - Throws: as ``register(_:_:)``.
    public func register<Args, ClientElement, ServerElement>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>, onLoop: Bool = false,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<ClientElement>, RPCStreamWriter<ServerElement>,
                                        RPCContext) async throws -> Void
    ) throws(RPCError) {
        try addStream(StreamHandler.bidi(method, onLoop: onLoop, handler))
    }

    private func addStream(_ handler: StreamHandler) throws(RPCError) {
        try state.withLock { (state: inout State) throws(RPCError) in
            guard case .configuring(var router) = state else {
                throw RPCError(.invalidArgument, "rpc: cannot register methods once the server has started")
            }
            try router.add(stream: handler)
            state = .configuring(router)
        }
    }

    /// Registers every method of `service` at once; if any fails, none is registered.
    ///
    /// - Throws: as ``register(_:_:)``.
    public func register(_ service: some RPCService) throws(RPCError) {
        var table = RPCMethodTable()
        service.register(into: &table)
        try add(table.handlers)
    }

    private func add(_ handlers: [RegisteredHandler]) throws(RPCError) {
        try state.withLock { (state: inout State) throws(RPCError) in
            guard case .configuring(var router) = state else {
                throw RPCError(.invalidArgument, "rpc: cannot register methods once the server has started")
            }
            try router.add(handlers)
            state = .configuring(router)
        }
    }

    // MARK: Lifecycle

    /// Binds, listens and starts the event loops. Returns the bound port.
    ///
    /// - Throws: `RPCError` when the address cannot be bound, the loops cannot start (see
    ///   ``RPCEventLoop/init(cpu:)``), or the server was already started.
    @discardableResult
    public func start() throws(RPCError) -> Int {
        try state.withLock { (state: inout State) throws(RPCError) -> Int in
            guard case .configuring(let router) = state else {
                throw RPCError(.invalidArgument, "rpc: the server was already started")
            }
            let loops = configuration.loops > 0 ? configuration.loops : System.onlineCPUs
            let core = ServerCore(router: ServerPipeline.build(router, configuration: configuration, loops: loops),
                                  loops: loops,
                                  maxCallsInFlightPerConnection: configuration.maxCallsInFlightPerConnection,
                                  maxRunningNotifications: configuration.maxRunningNotifications,
                                  drainTime: configuration.drainTimeout, streamWindow: configuration.streamWindow)
            let port = try core.start(configuration, loops: loops)
            state = .running(core, port: port)
            if let factory = configuration.metrics.resolve() {
                let poller = ServerMetricsPoller.start(core, factory: factory, options: configuration.metrics)
                gaugePoller.withLock { $0 = poller }
            }
            let limits = core.limits
            let address = configuration.host.hasPrefix("unix:") ? configuration.host : "\(configuration.host):\(port)"
            configuration.logger.info("listening", metadata: [
                "address": "\(address)", "loops": "\(loops)", "backend": "\(core.backend)",
                "transport": "\(configuration.tls == nil ? "plaintext" : "tls")",
                "fd-limit": "\(limits.descriptorLimit)", "fd-limit-before": "\(limits.descriptorLimitBefore)",
                "fd-reserve": "\(limits.descriptorReserve)", "max-connections": "\(limits.maxConnections)"])
            return port
        }
    }

    /// Replaces the TLS certificate (or trust roots) without a restart: handshakes from now
    /// on use `tls`, connections already open keep what they have.
    ///
    /// - Throws: `RPCError` (`.invalidArgument`) when the files do not load or the key does
    ///   not match, (`.failedPrecondition`) when the server is not running or was started
    ///   without TLS. The server keeps its current settings then.
    public func reloadTLS(_ tls: RPCTLSConfiguration) throws(RPCError) {
        let core = state.withLock { state -> ServerCore? in
            if case .running(let core, _) = state { return core }
            return nil
        }
        guard let core else { throw RPCError(.failedPrecondition, "rpc: the server is not running") }
        try core.reloadTLS(tls)
        configuration.logger.info("TLS settings reloaded")
    }

    /// The I/O backend of the server's loops while running (`"io_uring"` or `"epoll"`),
    /// else `nil`.
    public var backend: String? {
        state.withLock { state in
            if case .running(let core, _) = state { return core.backend }
            return nil
        }
    }

    /// What the descriptor limit lets the server do, while running; else `nil`.
    public var limits: RPCServerLimits? {
        state.withLock { state in
            if case .running(let core, _) = state { return core.limits }
            return nil
        }
    }

    /// The bound port while running, else `nil`.
    public var port: Int? {
        state.withLock { state in
            if case .running(_, let port) = state { return port }
            return nil
        }
    }

    /// The server's traffic since it started (zeros when it is not running).
    public var statistics: RPCServerStatistics {
        state.withLock { state in
            if case .running(let core, _) = state { return core.statistics }
            return RPCServerStatistics()
        }
    }

    /// Async handlers running right now for calls (a snapshot).
    public var runningHandlerCount: Int {
        state.withLock { state in
            if case .running(let core, _) = state { return core.running.count }
            return 0
        }
    }

    /// Async handlers running right now for notifications (a snapshot).
    public var runningNotificationCount: Int {
        state.withLock { state in
            if case .running(let core, _) = state { return core.running.notificationCount }
            return 0
        }
    }

    /// Call deadlines the server is watching now: one per running async call that has one
    /// (for tests: a finished call must leave none behind).
    var watchedDeadlineCount: Int {
        state.withLock { state in
            if case .running(let core, _) = state { return core.running.deadlineCount }
            return 0
        }
    }

    /// Connections open right now (a snapshot).
    public var connectionCount: Int {
        state.withLock { state in
            if case .running(let core, _) = state { return core.connectionCount }
            return 0
        }
    }

    /// Shuts down gracefully: stops accepting, answers new requests with `.unavailable`,
    /// lets the calls already running finish for up to `drainTimeout`, then closes every
    /// connection. Returns true when every call finished in time.
    @discardableResult
    public func shutdown(drainTimeout: Duration = .seconds(10)) async -> Bool {
        let core: ServerCore? = state.withLock { state in
            if case .running(let core, _) = state { return core }
            return nil
        }
        guard let core else { return true }
        gaugePoller.withLock { $0?.cancel() }
        configuration.logger.info("shutting down", metadata: [
            "running-calls": "\(core.running.count)", "drain-timeout": "\(drainTimeout)"])
        let drained = await withUnsafeContinuation { continuation in
            BlockingWork.run { continuation.resume(returning: core.shutdown(drainTimeout: drainTimeout)) }
        }
        state.withLock { $0 = .stopped }
        if drained {
            configuration.logger.info("stopped: every call finished")
        } else {
            configuration.logger.warning("stopped: the drain timeout cut calls off")
        }
        return drained
    }

    /// Stops accepting and closes every connection at once; calls still running are cut
    /// off (see ``shutdown(drainTimeout:)`` to let them finish). Idempotent; must not be
    /// called from a handler running inline on a loop thread.
    public func stop() {
        let core: ServerCore? = state.withLock { state in
            defer { state = .stopped }
            if case .running(let core, _) = state { return core }
            return nil
        }
        if let core {
            gaugePoller.withLock { $0?.cancel() }
            core.stop()
            configuration.logger.info("stopped")
        }
    }

    deinit { stop() }
}

/// The descriptor limit a server runs under and what it allows.
public struct RPCServerLimits: Sendable, Hashable {
    /// The process's soft `RLIMIT_NOFILE` once the server started.
    public var descriptorLimit: Int
    /// The soft limit before the server raised it (the same when it did not).
    public var descriptorLimitBefore: Int
    /// Descriptors the server leaves free for the rest of the process.
    public var descriptorReserve: Int
    /// The connection limit in force: the configured one, lowered to what the descriptors
    /// left at start allow beside the reserve.
    public var maxConnections: Int
}

/// A server's traffic, from counters the core keeps per loop without locks.
public struct RPCServerStatistics: Sendable, Hashable {
    /// Connections open now.
    public var connections = 0
    /// Requests delivered and not yet answered.
    public var requestsInFlight = 0
    /// Frames received: requests, notifications and cancels, well-formed or not.
    public var framesIn = 0
    /// Responses queued: replies, error replies and `rpc.ping` answers.
    public var framesOut = 0
    /// Bytes read from the connections.
    public var bytesIn = 0
    /// Bytes written to them.
    public var bytesOut = 0
    /// Frames refused: oversized or malformed (the connection closes), past a decoding
    /// limit (answered `.invalidArgument`) or past the calls-in-flight limit (answered
    /// `.resourceExhausted`).
    public var rejectedFrames = 0
    /// Connections accepted and closed at once: past the connection limit, while stopping,
    /// or when accepting would have eaten into the descriptor reserve.
    public var rejectedConnections = 0
    /// TLS handshakes completed.
    public var tlsHandshakes = 0
    /// TLS connections closed before their handshake completed: not TLS, a missing or bad
    /// client certificate, no ALPN, too slow or too big a handshake, a bad record, or a
    /// client that left midway (each cause is logged at most once per 10 s).
    public var rejectedHandshakes = 0
}
