internal import CMsgPack
internal import CRPCCore
internal import Glibc

/// The Swift side of one call in flight: retained while the C core holds it as the call's
/// context, released when the completion callback has run (exactly once).
class PendingCall: @unchecked Sendable {
    // @unchecked: the subclasses' only state is an immutable @Sendable closure.

    /// Ends the call with the core's result. Runs on the loop thread.
    func complete(_ result: UnsafePointer<crpc_result>) { fatalError("abstract") }

    /// Ends the call before it reached the core.
    func fail(_ error: RPCError) { fatalError("abstract") }

    /// The failure a core result stands for, or nil when a reply with a result arrived.
    static func failure(of r: crpc_result) -> RPCError? {
        if r.status < 0 {
            switch -r.status {
            case ECANCELED: return RPCError(.cancelled, "the call was cancelled")
            case ETIMEDOUT: return RPCError(.deadlineExceeded, "the call timed out")
            case ECONNRESET: return RPCError(.unavailable, "connection lost before the reply")
            case ESHUTDOWN: return RPCError(.unavailable, "the client was closed")
            case ENOTCONN: return RPCError(.unavailable, "not connected")
            default: return CoreErrors.error(r.status, "call failed")
            }
        }
        if r.error_code != 0 {
            let text = UnsafeRawBufferPointer(start: r.error_msg, count: Int(r.error_msg_len))
            return RPCError(.init(rawValue: Int(r.error_code)), String(decoding: text, as: UTF8.self))
        }
        return nil
    }
}

final class TypedPendingCall<Reply: Decodable & Sendable>: PendingCall, @unchecked Sendable {
    private let completion: @Sendable (Result<Reply, RPCError>) -> Void

    init(_ completion: @escaping @Sendable (Result<Reply, RPCError>) -> Void) {
        self.completion = completion
    }

    override func complete(_ result: UnsafePointer<crpc_result>) {
        let r = result.pointee
        if let error = Self.failure(of: r) {
            completion(.failure(error))
            return
        }
        do {
            let tree = UnsafeRawPointer(r.value!).assumingMemoryBound(to: msgpack_object.self)
            completion(.success(try MessagePackDecoder().decode(Reply.self, fromTree: tree)))
        } catch {
            completion(.failure(RPCError(.internal, "the reply does not decode as \(Reply.self): \(error)")))
        }
    }

    override func fail(_ error: RPCError) { completion(.failure(error)) }
}

/// The C completion callback: takes back the reference `RPCClient.start` handed the core.
let callCompletionTrampoline: crpc_call_fn = { ctx, result in
    guard let ctx, let result else { return }
    Unmanaged<PendingCall>.fromOpaque(ctx).takeRetainedValue().complete(result)
}
