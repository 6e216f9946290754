import SwiftRPC

/// What ``RPCClusterClient`` does when a call fails (rpcx's fail modes).
///
/// A call is retried only when it is safe: its request never left this process
/// (``SwiftRPC/RPCError/requestNeverSent``), or the method is idempotent
/// (``RPCCallOptions/idempotent`` or ``RPCClusterClient/Configuration/idempotentMethods``).
/// Only errors whose code is in ``RPCClusterClient/Configuration/retryableCodes``
/// (default: unavailable) are retried, and each retry takes a token from the
/// ``RPCRetryBudget``.
public enum RPCFailMode: Sendable, Hashable {
    /// One attempt; its failure is the call's.
    case failFast
    /// Up to `maxAttempts` attempts, each on a server not tried yet.
    case failover(maxAttempts: Int = 3)
    /// Up to `maxAttempts` attempts on the same server (a blip on one connection; with a
    /// pool, the next attempt may use another connection to it).
    case failTry(maxAttempts: Int = 3)
    /// Backup requests: when the first server has not answered within `after`, the same
    /// request goes to a second server; the first success wins and the other is cancelled.
    /// A failure of the first before `after` sends the backup at once. Backups run the
    /// method twice, so they are sent only for idempotent calls (others behave as
    /// ``failover(maxAttempts:)`` with two attempts).
    case backup(after: Duration)
}

/// Per-call options of ``RPCClusterClient``.
public struct RPCCallOptions: Sendable {
    /// The key for ``RPCSelection/consistentHash(virtualNodes:)`` (a user id, a shard key).
    public var hashKey: String?
    /// Whether the call may safely run more than once; nil: as the cluster's
    /// ``RPCClusterClient/Configuration/idempotentMethods`` says.
    public var idempotent: Bool?
    /// Each attempt's timeout; nil: the connection's default.
    public var timeout: Duration?
    /// Request metadata.
    public var metadata: RPCMetadata

    /// Options: no key, idempotence from the configuration, default timeout, no metadata.
    public init(hashKey: String? = nil, idempotent: Bool? = nil, timeout: Duration? = nil,
                metadata: RPCMetadata = RPCMetadata()) {
        self.hashKey = hashKey
        self.idempotent = idempotent
        self.timeout = timeout
        self.metadata = metadata
    }
}
