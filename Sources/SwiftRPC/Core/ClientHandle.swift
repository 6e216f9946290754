internal import CRPCCore
internal import Glibc
import Synchronization

/// Owns a `crpc_client`: the bridge every `RPCClient` operation goes through to the core.
/// `@unchecked Sendable`: every crpc_client function is thread-safe (crpc.h); the handle
/// stays valid after `close` (calls then fail at once) and is released only in `deinit`,
/// when no call can be using it.
@usableFromInline
final class ClientHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    let loop: RPCEventLoop
    private let closed = Atomic<Bool>(false)
    /// Tasks running intercepted `go` calls, so that `RPCCall.cancel` reaches them.
    let interceptedCalls = InterceptedCalls()

    private init(pointer: OpaquePointer, loop: RPCEventLoop) {
        self.pointer = pointer
        self.loop = loop
    }

    /// Connects on `loop`, blocking the calling thread for at most the connect timeout.
    static func connect(loop: RPCEventLoop, host: String, port: Int,
                        configuration: RPCClient.Configuration) throws(RPCError) -> ClientHandle {
        var config = crpc_client_config()
        config.connect_timeout_ms = UInt32(clamping: max(configuration.connectTimeout.milliseconds, 1))
        config.max_frame_size = UInt32(clamping: configuration.maxFrameSize)
        config.heartbeat_ms = UInt32(clamping: configuration.heartbeatInterval.map { max($0.milliseconds, 1) } ?? 0)
        config.dead_after_ms = UInt32(clamping: configuration.deadAfter.map { max($0.milliseconds, 1) } ?? 0)
        if let backoff = configuration.reconnect {
            config.reconnect = 1
            config.reconnect_min_ms = UInt32(clamping: max(backoff.initial.milliseconds, 1))
            config.reconnect_max_ms = UInt32(clamping: max(backoff.maximum.milliseconds, backoff.initial.milliseconds, 1))
            config.fail_fast = configuration.failFast ? 1 : 0
        }
        let tls = try configuration.tls.map { (tls) throws(RPCError) in try TLSContext.of(tls, server: false) }
        config.tls = tls?.pointer
        var client: OpaquePointer?
        let target = host.hasPrefix("unix:") ? host : "\(host):\(port)"
        // The client takes its own reference to the TLS context.
        let rc = withExtendedLifetime(tls) {
            optionalCString(tls?.serverName) { name in
                config.server_name = name
                return crpc_client_connect(loop.handle.pointer, host, UInt16(clamping: port), &config, &client)
            }
        }
        try CoreErrors.check(rc, "cannot connect to \(target)", detailed: true)
        return ClientHandle(pointer: client!, loop: loop)
    }

    var isConnected: Bool { crpc_client_is_connected(pointer) != 0 }

    var pendingCount: Int { Int(crpc_client_pending_count(pointer)) }

    var statistics: RPCClientStatistics {
        var stats = crpc_client_stats()
        crpc_client_get_stats(pointer, &stats)
        return RPCClientStatistics(pending: Int(stats.pending), lateReplies: Int(stats.late_replies),
                                   timeouts: Int(stats.timeouts), reconnects: Int(stats.reconnects))
    }

    /// Hands encoded `params` to the core as a call of `name`. `pending` carries the
    /// reference the core is to hold. Returns the call's id, or nil when the core refused
    /// it: the pending call has then already ended, on this thread.
    func call(_ name: String, params: UnsafeRawBufferPointer, metadata: RPCMetadata, timeoutMicroseconds: UInt64,
              pending: Unmanaged<PendingCall>) -> UInt64? {
        var id: UInt64 = 0
        let ctx = pending.toOpaque()
        let rc = Self.withCall(name, params, metadata, timeoutMicroseconds: timeoutMicroseconds) { c in
            crpc_client_call(pointer, &c, callCompletionTrampoline, ctx, &id)
        }
        if rc < 0 { // the core refused it: take back the reference it was to hold
            // -ENOTCONN after the client gave up for good says why (the TLS reason).
            let why = rc == -ENOTCONN ? String(cString: crpc_last_error()) : ""
            Unmanaged<PendingCall>.fromOpaque(ctx).takeRetainedValue()
                .fail(CoreErrors.error(rc, "cannot call \(name)", detail: why).neverSent())
            return nil
        }
        return id
    }

    /// Sends encoded `params` as a notification of `name`.
    func notify(_ name: String, params: UnsafeRawBufferPointer, metadata: RPCMetadata) throws(RPCError) {
        let rc = Self.withCall(name, params, metadata) { c in crpc_client_notify(pointer, &c) }
        try CoreErrors.check(rc, "cannot notify \(name)")
    }

    /// Gives up on call `id` (see `RPCCall.cancel`).
    func cancel(_ id: UInt64) { _ = crpc_client_cancel(pointer, id) }

    /// Closes once; true for the call that did.
    @discardableResult
    func close() -> Bool {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        crpc_client_close(pointer)
        return true
    }

    deinit { crpc_client_destroy(pointer) }

    /// Runs `body` with the `crpc_call` for `name` with `params` and `metadata`, valid for
    /// the call only: the name's bytes in place, the metadata as ext entries (none made when
    /// it is empty, as for most calls).
    private static func withCall(_ name: String, _ params: UnsafeRawBufferPointer, _ metadata: RPCMetadata,
                                 timeoutMicroseconds: UInt64 = 0, _ body: (inout crpc_call) -> Int32) -> Int32 {
        var c = crpc_call()
        c.timeout_us = timeoutMicroseconds
        c.params = params.baseAddress?.assumingMemoryBound(to: UInt8.self)
        c.params_len = UInt32(params.count)
        return withUTF8(name) { method in
            c.method = UnsafeRawPointer(method.baseAddress)?.assumingMemoryBound(to: CChar.self)
            c.method_len = UInt32(method.count)
            if metadata.isEmpty { return body(&c) }
            return ExtEntries.with(metadata) { ext, extCount in
                c.ext = ext
                c.ext_count = extCount
                return body(&c)
            }
        }
    }

    /// A string's UTF-8 bytes in place when it has them contiguous (native strings do), so a
    /// method name is not copied on every call; a copy otherwise.
    private static func withUTF8<R>(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = string
        return copy.withUTF8(body)
    }
}

/// Calls `body` with `text` as a C string, or with nil.
private func optionalCString<R>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}
