internal import CRPCCore
internal import Glibc

/// Where a request's reply goes — the C server that read it — and the one way the Swift
/// server answers: `send`, which hands the reply to `crpc_server_reply`.
///
/// `@unchecked Sendable`: `crpc_server_reply` may be called from any thread (crpc.h), and
/// the server outlives every task that can still reply (each holds the `ServerCore`, whose
/// deinit destroys it). A request names its own server: one can arrive on a loop thread
/// before `ServerCore.start` has stored the handle.
struct ReplySink: @unchecked Sendable {
    fileprivate let server: OpaquePointer?

    init(_ server: OpaquePointer?) { self.server = server }

    /// What a reply carries: the encoded result (one MessagePack value), or a status.
    enum Body {
        case result(UnsafeRawBufferPointer)
        case error(RPCError)
    }

    /// The longest error message sent; longer ones are cut (see `utf8Prefix`).
    static let maxErrorMessageBytes = 64 * 1024

    /// Answers call `msgid` of `conn`. A result the core refuses is answered with the
    /// status saying why (too large: 8; not one MessagePack value: 13). A caller that has
    /// gone (`-ENOTCONN`, `-ESHUTDOWN`) has nobody left to tell.
    func send(_ conn: UInt64, _ msgid: UInt32, _ body: Body, metadata: RPCMetadata = RPCMetadata()) {
        var reply = crpc_reply()
        switch body {
        case .result(let result):
            reply.result = result.baseAddress?.assumingMemoryBound(to: UInt8.self)
            reply.result_len = UInt32(result.count)
            let rc = hand(&reply, conn, msgid, metadata)
            if rc == -EMSGSIZE {
                send(conn, msgid, .error(RPCError(.resourceExhausted, "reply larger than the maximum frame size")))
            } else if rc == -EINVAL {
                send(conn, msgid, .error(RPCError(.internal, "handler returned bytes that are not one MessagePack value")))
            }
        case .error(let error):
            _ = Self.withError(error, in: &reply) { hand(&$0, conn, msgid, metadata) }
        }
    }

    /// Runs `body` with `reply` carrying `error`'s status and message: how every error
    /// answer (calls', streams' ends) is laid out. A message is cut to 64 KiB on a character
    /// boundary, so the peer's decoder gets valid UTF-8.
    static func withError(_ error: RPCError, in reply: inout crpc_reply,
                          _ body: (inout crpc_reply) -> Int32) -> Int32 {
        var utf8 = String(error.message.utf8Prefix(maxBytes: maxErrorMessageBytes))
        return utf8.withUTF8 { text in
            reply.error_code = Int32(clamping: error.code.rawValue)
            reply.error_msg = UnsafeRawPointer(text.baseAddress)?.assumingMemoryBound(to: CChar.self)
            reply.error_msg_len = UInt32(text.count)
            return body(&reply)
        }
    }

    /// Hands `reply`, with `metadata` as its ext entries, to the core.
    private func hand(_ reply: inout crpc_reply, _ conn: UInt64, _ msgid: UInt32, _ metadata: RPCMetadata) -> Int32 {
        ExtEntries.with(metadata) { ext, count in
            reply.ext = ext
            reply.ext_count = count
            return crpc_server_reply(server, conn, msgid, &reply)
        }
    }

    /// Answers with what an async handler's task ended with.
    func send(_ conn: UInt64, _ msgid: UInt32, _ outcome: Result<[UInt8], RPCError>, metadata: RPCMetadata) {
        switch outcome {
        case .success(let bytes): bytes.withUnsafeBytes { send(conn, msgid, .result($0), metadata: metadata) }
        case .failure(let error): send(conn, msgid, .error(error), metadata: metadata)
        }
    }
}
