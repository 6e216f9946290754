internal import CRPCCore
internal import Glibc

/// The one place where CRPCCore's negated errno values become Swift errors.
///
/// Codes that can only mean a bug in this module (`EBADF`, `EFAULT`) stop the process:
/// they are not conditions a caller could handle.
enum CoreErrors {
    /// Throws the `RPCError` for a negative return code; returns non-negative ones.
    /// `detailed`: the function sets `crpc_last_error()` when it fails (connect, server
    /// start), and its reason joins the message.
    @discardableResult
    static func check(_ rc: Int32, _ what: @autoclosure () -> String, detailed: Bool = false) throws(RPCError) -> Int32 {
        if rc >= 0 { return rc }
        throw error(rc, what(), detail: detailed ? String(cString: crpc_last_error()) : "")
    }

    /// The `RPCError` for a negated errno from the core, with the core's reason when known.
    static func error(_ rc: Int32, _ what: String, detail: String = "") -> RPCError {
        precondition(rc != -EBADF && rc != -EFAULT, "CRPCCore misuse in \(what): \(describe(rc))")
        let text = detail.isEmpty ? "\(what): \(describe(rc))" : "\(what): \(detail)"
        switch -rc {
        case ECANCELED: return RPCError(.cancelled, text)
        case ETIMEDOUT: return RPCError(.deadlineExceeded, text)
        case EMSGSIZE, ENOMEM, E2BIG: return RPCError(.resourceExhausted, text)
        case EINVAL, EBADMSG, EPROTO, ELOOP: return RPCError(.invalidArgument, text)
        case ECONNRESET, ECONNREFUSED, ENOTCONN, ESHUTDOWN, EPIPE, EHOSTUNREACH, ENETUNREACH, ENOENT,
             ECONNABORTED, EKEYREJECTED, EADDRINUSE, EADDRNOTAVAIL, EACCES, EEXIST, ENAMETOOLONG:
            // TLS failures (ECONNABORTED, EKEYREJECTED: the detail says why), a Unix socket
            // that is missing, taken or not ours.
            return RPCError(.unavailable, text)
        case EPERM, ENOSYS: return RPCError(.unavailable, text + " (io_uring is refused here)")
        default: return RPCError(.internal, text)
        }
    }

    /// The `RPCError` a call ends with when the core ends it without a reply (its
    /// completion's negative status).
    static func callFailure(_ status: Int32, reason: String? = nil) -> RPCError {
        if let reason, !reason.isEmpty { // the TLS connection failed: the core says how
            // Never sent: reconnecting met a certificate that does not verify, or the call
            // reached the loop after the client had given up for good (the reason is why).
            if -status == EKEYREJECTED || -status == ENOTCONN {
                return RPCError(.unavailable, reason).neverSent()
            }
            return RPCError(.unavailable, "connection lost before the reply: \(reason)")
        }
        switch -status {
        case ECANCELED: return RPCError(.cancelled, "the call was cancelled")
        case ETIMEDOUT: return RPCError(.deadlineExceeded, "the call timed out")
        case ECONNRESET: return RPCError(.unavailable, "connection lost before the reply")
        case ESHUTDOWN: return RPCError(.unavailable, "the client was closed")
        // Only the loop's own check reports this, before the request is encoded.
        case ENOTCONN: return RPCError(.unavailable, "not connected").neverSent()
        default: return error(status, "call failed")
        }
    }

    static func describe(_ rc: Int32) -> String {
        String(cString: crpc_strerror(rc))
    }
}
