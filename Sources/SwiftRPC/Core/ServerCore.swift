internal import CRPCCore

/// The running half of an `RPCServer`: owns the C server and dispatches its requests.
///
/// `@unchecked Sendable` is safe because: `router` and `loopScratch` are immutable after
/// init; `loopScratch[i]` is only ever used by loop `i`'s thread (inline handlers run
/// there); and `server` is written once, by `start`, and read only by the thread that owns
/// the server (stop, shutdown, statistics). Replies go through the server each request
/// names: a request can arrive on a loop thread before `start` has stored the handle.
final class ServerCore: @unchecked Sendable {
    let router: Router
    /// What loop `i`'s inline handlers reuse.
    private let loopScratch: [LoopScratch]
    /// `loopScratch` again, unretained (the array keeps them alive): a request borrows its
    /// loop's with no reference counting.
    private let borrowedScratch: [Unmanaged<LoopScratch>]
    /// Async handlers still running (calls and notifications), so cancel frames, deadlines
    /// and closed connections can reach them.
    let running: RunningHandlers
    private var server: OpaquePointer?

    /// How long a half-closed client's work may still run (the server's drain timeout).
    let drainTime: Duration
    /// What a stream's client may send ahead before the server grants more.
    let streamWindow: RPCStreamWindow
    /// Loop `i` as a task executor, for stream handlers that run on their loop.
    let loopExecutors: [ServerLoopExecutor]

    init(router: Router, loops: Int, maxCallsInFlightPerConnection: Int, maxRunningNotifications: Int,
         drainTime: Duration, streamWindow: RPCStreamWindow = .default) {
        self.router = router
        self.drainTime = drainTime
        self.streamWindow = streamWindow
        self.loopExecutors = (0..<max(loops, 1)).map { ServerLoopExecutor(index: $0) }
        self.loopScratch = (0..<max(loops, 1)).map { _ in LoopScratch() }
        self.borrowedScratch = loopScratch.map { Unmanaged.passUnretained($0) }
        self.running = RunningHandlers(
            notificationsPerConnection: maxCallsInFlightPerConnection,
            notificationsPerServer: maxRunningNotifications)
        // A passed deadline answers 4; the handler's task has been cancelled by then. The
        // core (and so the C server) is held while answering, explicitly: `send` does not
        // use self, so a bare `guard let self` could be released before it; the cancelled
        // task, which held the core too, may end meanwhile.
        running.watchDeadlines { [weak self] expired in
            guard let self else { return }
            withExtendedLifetime(self) {
                expired.replies.send(expired.key.conn, expired.key.msgid,
                                     .error(RPCError(.deadlineExceeded, "deadline exceeded")))
            }
        }
    }

    /// Starts the C server as `configuration` says, with `loops` loops; returns the port.
    func start(_ configuration: RPCServer.Configuration, loops: Int) throws(RPCError) -> Int {
        let started: Result<Int, RPCError> = configuration.host.withCString { host in
            var c = crpc_server_config()
            c.host = host
            c.port = UInt16(clamping: configuration.port)
            c.loops = UInt32(loops)
            c.max_frame_size = UInt32(clamping: configuration.maxFrameSize)
            c.max_inflight = UInt32(clamping: max(configuration.maxCallsInFlightPerConnection, 1))
            c.max_connections = UInt32(clamping: max(configuration.maxConnections, 1))
            c.max_output = UInt32(clamping: max(configuration.maxUnsentBytesPerConnection, 1))
            c.frame_timeout_ms = UInt32(clamping: max(configuration.frameTimeout.milliseconds, 1))
            c.eof_drain_ms = UInt32(clamping: max(configuration.drainTimeout.milliseconds, 1))
            c.fd_reserve = configuration.descriptorReserve.map { $0 > 0 ? Int32(clamping: $0) : CRPC_FD_RESERVE_NONE } ?? 0
            c.keep_fd_limit = configuration.raiseDescriptorLimit ? 0 : 1
            c.max_depth = UInt32(clamping: max(configuration.maxDepth, 2))
            c.max_ext = UInt32(clamping: max(configuration.maxMetadataEntries, 1))
            if let cpu = configuration.firstCPU {
                c.pin_loops = 1
                c.first_cpu = Int32(cpu)
            }
            c.unix_mode = UInt32(clamping: configuration.unixSocketMode ?? 0)
            return Result { () throws(RPCError) in
                // The server takes its own reference to the context: ours may go after.
                let tls = try configuration.tls.map { (tls) throws(RPCError) in try TLSContext.of(tls, server: true) }
                c.tls = tls?.pointer
                return try withExtendedLifetime(tls) { () throws(RPCError) in try start(c) }
            }
        }
        return try started.get()
    }

    /// New TLS handshakes use `configuration` from now on; open connections keep theirs.
    func reloadTLS(_ configuration: RPCTLSConfiguration) throws(RPCError) {
        guard let server else { throw RPCError(.failedPrecondition, "rpc: the server is not running") }
        let tls = try TLSContext.reloaded(configuration)
        try withExtendedLifetime(tls) { () throws(RPCError) in
            if crpc_server_reload_tls(server, tls.pointer) != 0 {
                throw RPCError(.failedPrecondition, "rpc: the server was started without TLS")
            }
        }
    }

    /// Starts the C server; `config` has everything but the callbacks filled in.
    private func start(_ config: crpc_server_config) throws(RPCError) -> Int {
        var config = config
        config.on_request = serverRequestTrampoline
        config.on_conn_ended = connectionEndedTrampoline
        config.on_peer_release = peerReleaseTrampoline
        config.on_stream_release = streamReleaseTrampoline
        config.user = Unmanaged.passUnretained(self).toOpaque()
        var handle: OpaquePointer?
        try CoreErrors.check(crpc_server_start(&config, &handle), "cannot start the server", detailed: true)
        server = handle
        return Int(crpc_server_port(handle))
    }

    func stop() {
        if let server { crpc_server_stop(server) }
    }

    /// The I/O backend of the server's loops.
    var backend: String {
        server.flatMap { crpc_server_backend($0) }.map { String(cString: $0) } ?? "none"
    }

    /// Blocks until drained (true) or the deadline cut calls off (false).
    func shutdown(drainTimeout: Duration) -> Bool {
        guard let server else { return true }
        return crpc_server_shutdown(server, UInt32(clamping: drainTimeout.milliseconds)) == 0
    }

    var connectionCount: Int { server.map { Int(crpc_server_connection_count($0)) } ?? 0 }

    /// Requests delivered and not yet answered (a snapshot).
    var inflightCount: Int { server.map { Int(crpc_server_inflight($0)) } ?? 0 }

    /// The core's traffic counters (zero before the server starts).
    var statistics: RPCServerStatistics {
        var s = crpc_server_stats()
        if let server { crpc_server_get_stats(server, &s) }
        return RPCServerStatistics(
            connections: connectionCount, requestsInFlight: inflightCount,
            framesIn: Int(s.frames_in), framesOut: Int(s.frames_out),
            bytesIn: Int(s.bytes_in), bytesOut: Int(s.bytes_out), rejectedFrames: Int(s.rejected_frames),
            rejectedConnections: Int(s.rejected_connections), tlsHandshakes: Int(s.tls_handshakes),
            rejectedHandshakes: Int(s.rejected_handshakes))
    }

    /// The descriptor limits the server started with.
    var limits: RPCServerLimits {
        var l = crpc_server_limits()
        if let server { crpc_server_get_limits(server, &l) }
        return RPCServerLimits(
            descriptorLimit: Int(clamping: l.fd_limit), descriptorLimitBefore: Int(clamping: l.fd_limit_before),
            descriptorReserve: Int(l.fd_reserve), maxConnections: Int(l.max_connections))
    }

    deinit {
        // Every task that could still reply holds a reference to self: none is left now.
        if let server { crpc_server_destroy(server) }
    }

    // MARK: Receive (loop thread)

    /// A request, a notification or a cancel off the wire: finds the handler, unpacks the
    /// params if it decodes them, and dispatches (RequestDispatch.swift).
    func handle(_ request: UnsafePointer<crpc_request>) {
        let conn = request.pointee.conn
        let msg = request.pointee.msg
        // Confinement (debug builds): the loop's scratch and inline handlers are its thread's.
        assert(crpc_server_on_loop(request.pointee.server, UInt32(conn >> 56)) != 0,
               "a request was dispatched off the thread of the loop that read it")
        if let stream = request.pointee.stream {
            handleStream(request, stream)
            return
        }
        if msg.type == UInt8(CRPC_MSG_CANCEL.rawValue) {
            running.cancel(RunningHandlers.Key(conn: conn, msgid: msg.msgid))
            return
        }
        guard msg.type == UInt8(CRPC_MSG_REQUEST.rawValue) || msg.type == UInt8(CRPC_MSG_NOTIFICATION.rawValue) else {
            return
        }
        let wireName = UnsafeRawBufferPointer(start: msg.method, count: Int(msg.method_len))
        // The handler and the loop's scratch are borrowed for the request's dispatch.
        let handler = router.borrowedHandler(forWireName: wireName)
        let decodes = handler?._withUnsafeGuaranteedRef { $0.decodesParams } ?? false
        let params = RequestParams(
            bytes: UnsafeRawBufferPointer(start: msg.body, count: Int(msg.body_len)),
            tree: decodes ? Self.unpackParams(request) : nil)
        let incoming = ServerRequest(
            conn: conn, msgid: msg.msgid, wantsReply: msg.type == UInt8(CRPC_MSG_REQUEST.rawValue),
            wireName: wireName, params: params,
            timeout: msg.timeout_us == 0 ? nil : .microseconds(Int64(clamping: msg.timeout_us)),
            replies: ReplySink(request.pointee.server), peer: RPCPeer.of(request))
        borrowedScratch[Int(conn >> 56)]._withUnsafeGuaranteedRef { scratch in
            // Made here, so it is handed over, not copied out of a captured variable.
            dispatch(incoming, metadata: ExtEntries.metadata(msg.ext, Int(msg.ext_count)), handler: handler, scratch: scratch)
        }
    }

    /// The params tree the core unpacks from the request's frame (nil: out of memory).
    private static func unpackParams(_ request: UnsafePointer<crpc_request>) -> MessagePackTree? {
        let message = (UnsafeRawPointer(request) + MemoryLayout<crpc_request>.offset(of: \.msg)!)
            .assumingMemoryBound(to: crpc_message.self)
        return crpc_message_value(message).map { MessagePackTree(unsafeRoot: UnsafeRawPointer($0)) }
    }
}

/// A connection closed: its handlers' replies have nowhere to go, so stop them; after an
/// orderly end (reason 0) its notifications may finish, within the drain time.
private let connectionEndedTrampoline: crpc_conn_ended_fn = { user, conn, reason in
    guard let user else { return }
    let core = Unmanaged<ServerCore>.fromOpaque(user).takeUnretainedValue()
    core.running.connectionEnded(conn, grace: reason == 0 ? core.drainTime : nil)
    // Interceptors that keep per-connection state (the rate limiter) forget it here.
    for observer in core.router.connectionObservers { observer.connectionClosed(RPCConnectionID(rawValue: conn)) }
}

/// What one loop's inline handlers reuse from request to request: they finish before the
/// loop's next request. `@unchecked Sendable`: only that loop's thread touches it.
final class LoopScratch: @unchecked Sendable {
    let writer = MessagePackWriter(initialCapacity: 4096)
    let responseMetadata = RPCResponseMetadata()
}

/// The C callback: recovers the ServerCore (kept alive by its RPCServer while the C
/// server runs, so borrowed here: no retain and release per request) and dispatches on
/// the loop thread.
private let serverRequestTrampoline: crpc_request_fn = { user, request in
    guard let user, let request else { return }
    Unmanaged<ServerCore>.fromOpaque(user)._withUnsafeGuaranteedRef { $0.handle(request) }
}
