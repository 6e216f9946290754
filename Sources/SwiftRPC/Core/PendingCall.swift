internal import CRPCCore
import Synchronization

/// The Swift side of one call in flight: retained while the C core holds it as the call's
/// context, released when the completion callback has run (exactly once).
@usableFromInline
class PendingCall: @unchecked Sendable {
    // @unchecked: the subclasses' state is an immutable @Sendable closure, or (async) a
    // continuation handed over once through the core's queue plus an atomic.

    @usableFromInline init() {}

    /// Ends the call with the core's result. Runs on the loop thread.
    func complete(_ result: UnsafePointer<crpc_result>) { fatalError("abstract") }

    /// Ends the call before it reached the core.
    func fail(_ error: RPCError) { fatalError("abstract") }

    /// The failure a core result stands for, or nil when a reply with a result arrived.
    static func failure(of r: crpc_result) -> RPCError? {
        if r.status < 0 {
            let reason = r.error_msg.map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.error_msg_len)), as: UTF8.self)
            }
            return CoreErrors.callFailure(r.status, reason: reason)
        }
        if r.error_code != 0 {
            let text = UnsafeRawBufferPointer(start: r.error_msg, count: Int(r.error_msg_len))
            return RPCError(.init(rawValue: Int(r.error_code)), String(decoding: text, as: UTF8.self))
        }
        return nil
    }
}

/// A call whose reply decodes as `Reply`; subclasses say where the result goes.
@usableFromInline
class TypedPendingCall<Reply: Decodable & Sendable>: PendingCall, @unchecked Sendable {
    @usableFromInline override init() {}

    /// Set before the call is sent when the caller wants the response's metadata; it is
    /// handed to `received(metadata:)` (on the loop thread) before the result is delivered.
    var wantsMetadata = false

    /// Keeps the response's metadata; only the calls that ask for it (async ones) do.
    func received(metadata: RPCMetadata) {}

    /// Hands the call's one result on.
    func deliver(_ result: Result<Reply, RPCError>) { fatalError("abstract") }

    /// Hands on a reply; subclasses whose caller supplied specialized code override it.
    func deliver(success reply: Reply) { deliver(.success(reply)) }

    override final func complete(_ result: UnsafePointer<crpc_result>) {
        let r = result.pointee
        if wantsMetadata { received(metadata: ExtEntries.metadata(r.ext, Int(r.ext_count))) }
        if r.status < 0 || r.error_code != 0, let error = Self.failure(of: r) {
            fail(error)
            return
        }
        // A scalar reply (bytes, a string, a number) is read from its raw bytes: no tree.
        if let raw = r.result {
            do {
                if try MessagePackDecoder().decodeScalar(
                    Reply.self, fromBytes: UnsafeRawBufferPointer(start: raw, count: Int(r.result_len)),
                    into: { deliver(success: $0) }) { return }
            } catch {
                return fail(Self.undecodable(error))
            }
        }
        guard let message = r.message, let value = crpc_message_value(message) else {
            fail(RPCError(.resourceExhausted, "out of memory unpacking the reply"))
            return
        }
        decode(from: MessagePackTree(unsafeRoot: UnsafeRawPointer(value)))
    }

    /// Decodes the reply in `tree` and hands it on, or fails the call.
    private func decode(from tree: MessagePackTree) {
        do {
            deliver(success: try MessagePackDecoder().decode(Reply.self, fromTree: tree))
        } catch {
            fail(Self.undecodable(error))
        }
    }

    private static func undecodable(_ error: any Error) -> RPCError {
        RPCError(.internal, "the reply does not decode as \(Reply.self): \(error)")
    }

    // Never inlined: `complete` then mentions no `Result<Reply, RPCError>`, whose metadata
    // generic code would otherwise look up on entry, on every call, for the failure paths.
    @inline(never)
    override final func fail(_ error: RPCError) { deliver(.failure(error)) }
}

/// `go`: the result goes to the caller's completion closure.
@usableFromInline
final class CallbackPendingCall<Reply: Decodable & Sendable>: TypedPendingCall<Reply>, @unchecked Sendable {
    // @unchecked: the only state is two immutable @Sendable closures.
    @usableFromInline
    typealias Completion = @Sendable (Result<Reply, RPCError>) -> Void

    private let completion: Completion
    /// Passes a reply to `completion` as `.success`. `go` writes it where `Reply` is concrete,
    /// so building the `Result` needs no run-time lookup of `Result<Reply, RPCError>`'s
    /// metadata: done here, in code generic over `Reply`, that lookup cost as much as
    /// decoding a small reply. It captures nothing, so it costs no allocation.
    private let succeed: @Sendable (Completion, Reply) -> Void

    @usableFromInline
    init(_ completion: @escaping Completion, succeed: @escaping @Sendable (Completion, Reply) -> Void) {
        self.completion = completion
        self.succeed = succeed
    }

    override func deliver(_ result: Result<Reply, RPCError>) { completion(result) }

    override func deliver(success reply: Reply) { succeed(completion, reply) }
}

/// `await call`: the result resumes the awaiting task, and cancelling that task cancels
/// the call. One object per call carries both, so the async path costs one allocation
/// beyond the callback path's work.
@usableFromInline
final class AsyncPendingCall<Reply: Decodable & Sendable>: TypedPendingCall<Reply>, @unchecked Sendable {
    // @unchecked: `continuation` is written once by the awaiting task before the call is
    // handed to the core (which publishes it to the loop thread) and read once by the loop
    // thread; `state` is atomic.
    @usableFromInline
    typealias Continuation = UnsafeContinuation<Result<Reply, RPCError>, Never>

    private var continuation: Continuation?
    private let handle: ClientHandle
    /// The response's metadata, when `wantsMetadata` was set.
    private(set) var responseMetadata = RPCMetadata()
    /// Resumes a continuation with `.success`; see `CallbackPendingCall.succeed`.
    private let succeed: @Sendable (Continuation, Reply) -> Void
    /// 0: not sent yet; 1: cancelled before it was sent; n + 2: sent as call id n.
    private let state = Atomic<UInt64>(0)
    /// Stored (releasing) just before the continuation resumes, loaded (acquiring) by the
    /// resumed task. The continuation already orders the two threads; this pair says so in
    /// a form ThreadSanitizer sees, as on Linux it cannot see through a resume (on x86 it
    /// costs a plain store and a plain load).
    private let delivered = Atomic<Bool>(false)

    @usableFromInline
    init(handle: ClientHandle, succeed: @escaping @Sendable (Continuation, Reply) -> Void) {
        self.handle = handle
        self.succeed = succeed
    }

    /// A pending call whose `succeed` is compiled where `Reply` is concrete (this is inlined
    /// into the caller).
    @inlinable
    static func make(handle: ClientHandle) -> AsyncPendingCall<Reply> {
        AsyncPendingCall(handle: handle, succeed: { continuation, reply in continuation.resume(returning: .success(reply)) })
    }

    override func received(metadata: RPCMetadata) { responseMetadata = metadata }

    @usableFromInline
    func install(_ continuation: Continuation) {
        self.continuation = continuation
    }

    override func deliver(_ result: Result<Reply, RPCError>) {
        delivered.store(true, ordering: .releasing)
        continuation!.resume(returning: result)
    }

    override func deliver(success reply: Reply) {
        delivered.store(true, ordering: .releasing)
        succeed(continuation!, reply)
    }

    /// Called by the resumed task before it reads the result (see `delivered`).
    @usableFromInline
    func acquireDelivery() { _ = delivered.load(ordering: .acquiring) }

    /// Records the sent call's id; cancels it at once if the task was cancelled meanwhile.
    @usableFromInline
    func sent(_ id: UInt64) {
        let (exchanged, _) = state.compareExchange(expected: 0, desired: id &+ 2, ordering: .acquiringAndReleasing)
        if !exchanged { handle.cancel(id) }
    }

    /// The awaiting task was cancelled.
    @usableFromInline
    func cancel() {
        let (exchanged, seen) = state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing)
        if !exchanged && seen >= 2 { handle.cancel(seen &- 2) }
    }
}

/// The C completion callback: takes back the reference `RPCClient.start` handed the core.
let callCompletionTrampoline: crpc_call_fn = { ctx, result in
    guard let ctx, let result else { return }
    Unmanaged<PendingCall>.fromOpaque(ctx).takeRetainedValue().complete(result)
}
