internal import CRPCCore
internal import Glibc
import Synchronization

/// The client's side of one stream: what the core's events feed (the inbound elements, the
/// writer's credit, the leading and trailing metadata, the end). The core holds it retained
/// from the open until the END event, which the core delivers exactly once and last.
///
/// `@unchecked Sendable`: `channel` is thread-safe; the rest is behind `state`'s lock.
final class ClientStreamCall: @unchecked Sendable {
    let channel: StreamChannel
    private struct State {
        var leading: RPCMetadata?
        var trailing: RPCMetadata?
        var end: Result<[UInt8]?, RPCError>?
        var endWaiter: UnsafeContinuation<Void, Never>?
    }
    private let state = Locked(State())
    /// The client's handle, kept while the stream is: a stream outlived by its client's
    /// event loop would post its cancel to a loop that is gone.
    private let owner: ClientHandle

    /// Client streams alive in this process (tests check that every one is freed).
    static let alive = Atomic<Int>(0)

    init(window: RPCStreamWindow, owner: ClientHandle) {
        self.owner = owner
        Self.alive.add(1, ordering: .relaxed)
        // A consumer that stops waiting (its task cancelled) gives the stream up.
        let box = WeakBox<ClientStreamCall>()
        channel = StreamChannel(window: window, onConsumerCancelled: { box.value?.cancel() })
        box.value = self
    }

    deinit {
        channel.releaseHandle()
        Self.alive.subtract(1, ordering: .relaxed)
    }

    /// Gives the stream up: a cancel frame tells the server; the end is `.cancelled`.
    func cancel() { _ = channel.withHandle { crpc_stream_cancel($0) } }

    /// Says no more elements will be sent (once; again is nothing).
    func halfClose() {
        _ = channel.withHandle { crpc_stream_half_close($0) }
        channel.endWriting(RPCError(.failedPrecondition, "the stream is half-closed: no more elements"))
    }

    var leadingMetadata: RPCMetadata? { state.withLock { $0.leading } }
    var trailingMetadata: RPCMetadata? { state.withLock { $0.trailing } }

    /// The end response: the result's bytes (nil for nil) or why the stream failed. Waits for
    /// it; a cancelled task cancels the stream (and still gets its end).
    func end() async -> Result<[UInt8]?, RPCError> {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    if s.end != nil { return true }
                    s.endWaiter = c
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            cancel()
        }
        return state.withLock { $0.end! }
    }

    /// An event from the core (loop thread).
    func handle(_ event: UnsafePointer<crpc_stream_event>) {
        let ev = event.pointee
        switch ev.type {
        case Int32(CRPC_STREAM_ACCEPTED.rawValue):
            let m = ev.message!.pointee
            let leading = ExtEntries.metadata(m.ext, Int(m.ext_count))
            state.withLock { $0.leading = leading }
            channel.wakeWriter()
        case Int32(CRPC_STREAM_ELEMENT.rawValue):
            let m = ev.message!.pointee
            channel.received(UnsafeRawBufferPointer(start: m.body, count: Int(m.body_len)),
                             metadata: ExtEntries.metadata(m.ext, Int(m.ext_count)), frameBytes: Int(m.frame_len))
        case Int32(CRPC_STREAM_WRITABLE.rawValue):
            channel.wakeWriter()
        default:
            ended(ev.result!.pointee)
        }
    }

    private func ended(_ r: crpc_result) {
        let outcome: Result<[UInt8]?, RPCError>
        if let failure = Self.failure(of: r) {
            outcome = .failure(failure)
        } else if let result = r.result, r.result_len > 0, !(r.result_len == 1 && result[0] == 0xc0) {
            outcome = .success(Array(UnsafeRawBufferPointer(start: result, count: Int(r.result_len))))
        } else {
            outcome = .success(nil)
        }
        let trailing = ExtEntries.metadata(r.ext, Int(r.ext_count))
        let waiter = state.withLock { s -> UnsafeContinuation<Void, Never>? in
            s.end = outcome
            s.trailing = trailing
            if s.leading == nil { s.leading = RPCMetadata() } // ended before any acceptance
            defer { s.endWaiter = nil }
            return s.endWaiter
        }
        let error: RPCError? = if case .failure(let e) = outcome { e } else { nil }
        channel.finishInbound(error)
        channel.endWriting(error ?? RPCError(.failedPrecondition, "the server has ended the stream"))
        waiter?.resume()
    }

    /// A call's failure (PendingCall's reading of the result), but for the endings only a
    /// stream has and the words that name a stream.
    private static func failure(of r: crpc_result) -> RPCError? {
        let reason = r.error_msg.map {
            String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.error_msg_len)), as: UTF8.self)
        }
        switch -r.status {
        case EOVERFLOW: return RPCError(.resourceExhausted, reason ?? "stream credit exceeded")
        case EPROTO: return RPCError(.internal, reason ?? "malformed stream frame")
        case ECANCELED: return RPCError(.cancelled, "the stream was cancelled")
        case ETIMEDOUT: return RPCError(.deadlineExceeded, "the stream's deadline passed")
        default: return PendingCall.failure(of: r)
        }
    }
}

/// A reference that does not keep its target alive (breaks the channel's callback cycle).
final class WeakBox<T: AnyObject>: @unchecked Sendable {
    weak var value: T?
}

/// The C callback: the END event takes back the reference the open handed the core.
let streamEventTrampoline: crpc_stream_fn = { ctx, event in
    guard let ctx, let event else { return }
    let call = Unmanaged<ClientStreamCall>.fromOpaque(ctx)
    if event.pointee.type == Int32(CRPC_STREAM_END.rawValue) {
        call.takeRetainedValue().handle(event)
    } else {
        call._withUnsafeGuaranteedRef { $0.handle(event) }
    }
}

extension ClientHandle {
    /// Opens a stream of `kind` (1-3) for `call`, which the core then holds until its end.
    func openStream(_ name: String, kind: Int32, params: [UInt8], options: RPCStreamOptions,
                    defaultTimeout: Duration?, window: RPCStreamWindow, call: ClientStreamCall) throws(RPCError) {
        let timeout = options.timeout ?? defaultTimeout
        var open = crpc_stream_open()
        open.kind = kind
        open.credit_messages = UInt32(clamping: window.messages)
        open.credit_bytes = UInt32(clamping: window.bytes)
        open.call.timeout_us = timeout.map { UInt64(clamping: max($0.microseconds, 1)) } ?? 0
        var stream: OpaquePointer?
        let ctx = Unmanaged.passRetained(call).toOpaque()
        let rc = params.withUnsafeBytes { p in
            name.withCString { method in
                ExtEntries.with(options.metadata) { ext, count in
                    open.call.method = method
                    open.call.method_len = UInt32(strlen(method))
                    open.call.params = p.baseAddress?.assumingMemoryBound(to: UInt8.self)
                    open.call.params_len = UInt32(p.count)
                    open.call.ext = ext
                    open.call.ext_count = count
                    return crpc_client_open_stream(pointer, &open, streamEventTrampoline, ctx, &stream)
                }
            }
        }
        if rc < 0 {
            Unmanaged<ClientStreamCall>.fromOpaque(ctx).release()
            let why = rc == -ENOTCONN ? String(cString: crpc_last_error()) : ""
            throw CoreErrors.error(rc, "cannot open the stream \(name)", detail: why)
        }
        call.channel.attach(stream!)
    }
}
