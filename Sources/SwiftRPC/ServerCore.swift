internal import CMsgPack
internal import CRPCCore
internal import Glibc

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

    init(router: Router, loops: Int, maxCallsInFlightPerConnection: Int, maxRunningNotifications: Int,
         drainTime: Duration) {
        self.router = router
        self.drainTime = drainTime
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
                Self.send(expired.server, expired.key.conn, expired.key.msgid,
                          error: RPCError(.deadlineExceeded, "deadline exceeded"))
            }
        }
    }

    /// Starts the C server; `config` has everything but the callback filled in.
    func start(_ config: crpc_server_config) throws(RPCError) -> Int {
        var config = config
        config.on_request = serverRequestTrampoline
        config.on_conn_ended = connectionEndedTrampoline
        config.user = Unmanaged.passUnretained(self).toOpaque()
        var handle: OpaquePointer?
        try CoreErrors.check(crpc_server_start(&config, &handle), "cannot start the server")
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
            rejectedConnections: Int(s.rejected_connections))
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

    // MARK: Dispatch (loop thread)

    func handle(_ request: UnsafePointer<crpc_request>) {
        let conn = request.pointee.conn
        let msg = request.pointee.msg
        // Confinement (debug builds): the loop's scratch and inline handlers are its thread's.
        assert(crpc_server_on_loop(request.pointee.server, UInt32(conn >> 56)) != 0,
               "a request was dispatched off the thread of the loop that read it")
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
        borrowedScratch[Int(conn >> 56)]._withUnsafeGuaranteedRef { scratch in
            dispatch(request, handler: handler, scratch: scratch)
        }
    }

    /// `handler` is unretained: the router, which this core holds, keeps it alive.
    private func dispatch(_ request: UnsafePointer<crpc_request>, handler: Unmanaged<RegisteredHandler>?,
                          scratch: LoopScratch) {
        let conn = request.pointee.conn
        let msg = request.pointee.msg
        let server = request.pointee.server
        let wantsReply = msg.type == UInt8(CRPC_MSG_REQUEST.rawValue)
        let msgid = msg.msgid
        // A registered method's name is already a String; only the others need one made.
        // Read from the context from here on: the context takes this copy over, so a name
        // too long to be stored inline is retained once per request, not twice.
        let name = handler?._withUnsafeGuaranteedRef { $0.name }
            ?? String(decoding: UnsafeRawBufferPointer(start: msg.method, count: Int(msg.method_len)), as: UTF8.self)
        let params = RequestParams(
            message: (UnsafeRawPointer(request) + MemoryLayout<crpc_request>.offset(of: \.msg)!)
                .assumingMemoryBound(to: crpc_message.self),
            bytes: UnsafeRawBufferPointer(start: msg.body, count: Int(msg.body_len)))
        // Inline handlers share their loop's metadata box (they finish before the next
        // request); an async handler gets its own below.
        let responseMetadata = scratch.responseMetadata
        responseMetadata.reset()
        let inlineContext = RPCContext(
            method: name, metadata: ExtEntries.metadata(msg.ext, Int(msg.ext_count)),
            timeout: msg.timeout_us == 0 ? nil : .microseconds(Int64(clamping: msg.timeout_us)),
            responseMetadata: responseMetadata, connection: RPCConnectionID(rawValue: conn))
        let writer = scratch.writer
        writer.reset()

        let outcome = handler.map { handler in
            handler._withUnsafeGuaranteedRef {
                router.dispatch(registered: $0, params: params, context: inlineContext, writer: writer)
            }
        } ?? router.dispatch(builtin: inlineContext.method, writer: writer)
        switch outcome {
        case .written:
            if wantsReply { writer.withUnsafeBytes { Self.send(server, conn, msgid, result: $0, metadata: responseMetadata.metadata) } }
        case .echo(let range):
            if wantsReply {
                Self.send(server, conn, msgid, result: UnsafeRawBufferPointer(rebasing: params.bytes[range]),
                     metadata: responseMetadata.metadata)
            }
        case .failed(let error):
            if wantsReply { Self.send(server, conn, msgid, error: error, metadata: responseMetadata.metadata) }
        case .later(let job):
            let context = RPCContext(method: inlineContext.method, metadata: inlineContext.metadata,
                                     timeout: inlineContext.timeout, responseMetadata: RPCResponseMetadata(),
                                     connection: inlineContext.connection)
            guard wantsReply else {
                // Past the connection's or the server's limit the notification is dropped:
                // it is oneway, nobody waits.
                _ = running.startNotification(conn: conn) { ticket in
                    Task {
                        _ = try? await job(context)
                        _ = self.running.finish(ticket)
                    }
                }
                return
            }
            let target = ReplyTarget(server: server)
            // The deadline, if any, is watched by `running`: it answers 4 and cancels the
            // task when it passes, and is gone the moment the handler answers first.
            running.startCall(.init(conn: conn, msgid: msgid), timeout: context.timeout, server: server) { ticket in
                Task {
                    let outcome: Result<[UInt8], RPCError>
                    do { outcome = .success(try await job(context)) } catch {
                        outcome = .failure(Task.isCancelled && !(error is RPCError)
                            ? RPCError(.cancelled, "the call was cancelled") : RPCError(handlerError: error))
                    }
                    if self.running.finish(ticket) {
                        Self.send(target.server, conn, msgid, outcome, metadata: context.responseMetadata.metadata)
                    }
                }
            }
        }
    }

    private static func send(_ server: OpaquePointer?, _ conn: crpc_conn_id, _ msgid: UInt32, _ outcome: Result<[UInt8], RPCError>,
                      metadata: RPCMetadata) {
        switch outcome {
        case .success(let bytes): bytes.withUnsafeBytes { send(server, conn, msgid, result: $0, metadata: metadata) }
        case .failure(let error): send(server, conn, msgid, error: error, metadata: metadata)
        }
    }

    // MARK: Replies (any thread)

    /// The longest error message sent; longer ones are cut (see `utf8Prefix`).
    static let maxErrorMessageBytes = 64 * 1024

    private static func send(_ server: OpaquePointer?, _ conn: crpc_conn_id, _ msgid: UInt32, result: UnsafeRawBufferPointer,
                      metadata: RPCMetadata = RPCMetadata()) {
        var reply = crpc_reply()
        reply.result = result.baseAddress?.assumingMemoryBound(to: UInt8.self)
        reply.result_len = UInt32(result.count)
        let rc = ExtEntries.with(metadata) { ext, count in
            reply.ext = ext
            reply.ext_count = count
            return crpc_server_reply(server, conn, msgid, &reply)
        }
        if rc == -EMSGSIZE {
            send(server, conn, msgid, error: RPCError(.resourceExhausted, "reply larger than the maximum frame size"))
        } else if rc == -EINVAL {
            send(server, conn, msgid, error: RPCError(.internal, "handler returned bytes that are not one MessagePack value"))
        }
        // -ENOTCONN / -ESHUTDOWN: the caller has gone; nobody is left to tell.
    }

    private static func send(_ server: OpaquePointer?, _ conn: crpc_conn_id, _ msgid: UInt32, error: RPCError,
                      metadata: RPCMetadata = RPCMetadata()) {
        // A message is cut to 64 KiB on a character boundary: the peer's decoder gets valid UTF-8.
        var utf8 = String(error.message.utf8Prefix(maxBytes: Self.maxErrorMessageBytes))
        utf8.withUTF8 { text in
            var reply = crpc_reply()
            reply.error_code = Int32(clamping: error.code.rawValue)
            reply.error_msg = UnsafeRawPointer(text.baseAddress)?.assumingMemoryBound(to: CChar.self)
            reply.error_msg_len = UInt32(text.count)
            _ = ExtEntries.with(metadata) { ext, count in
                reply.ext = ext
                reply.ext_count = count
                return crpc_server_reply(server, conn, msgid, &reply)
            }
        }
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

/// The C server a request came through, carried into the task that answers it.
/// `@unchecked Sendable`: crpc_server_reply may be called from any thread (crpc.h), and the
/// server outlives every task that can still reply (they hold the ServerCore, whose deinit
/// destroys it).
private struct ReplyTarget: @unchecked Sendable {
    let server: OpaquePointer?
}

/// The C callback: recovers the ServerCore (kept alive by its RPCServer while the C
/// server runs, so borrowed here: no retain and release per request) and dispatches on
/// the loop thread.
private let serverRequestTrampoline: crpc_request_fn = { user, request in
    guard let user, let request else { return }
    Unmanaged<ServerCore>.fromOpaque(user)._withUnsafeGuaranteedRef { $0.handle(request) }
}
