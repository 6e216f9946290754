/// Limits each connection to a rate of calls (a token bucket): a call past the budget is
/// answered with status 8 (resource exhausted) without running the handler, and the
/// connection stays open; the budget refills over time.
///
/// ```swift
/// // 100 calls a second per connection, bursts of up to 20.
/// let limit = RateLimitInterceptor(callsPerSecond: 100, burst: 20)
/// let server = RPCServer(configuration: .init(interceptors: [limit]))
/// ```
///
/// Each connection's bucket is forgotten when it closes. Buckets sit behind one lock,
/// taken once per call: this interceptor is opt-in and the lock is held for a few
/// arithmetic operations.
public final class RateLimitInterceptor: RPCServerInterceptor {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    /// Calls a second each connection may make, sustained.
    public let callsPerSecond: Double
    /// Calls a connection may make at once after being idle.
    public let burst: Int
    private let buckets = Locked<[RPCConnectionID: Bucket]>([:])
    private let now: @Sendable () -> ContinuousClock.Instant

    /// A limit of `callsPerSecond` per connection, with bursts up to `burst` calls.
    public convenience init(callsPerSecond: Double, burst: Int) {
        self.init(callsPerSecond: callsPerSecond, burst: burst, clock: { ContinuousClock.now })
    }

    /// With a clock of the caller's (tests move time by hand).
    init(callsPerSecond: Double, burst: Int, clock: @escaping @Sendable () -> ContinuousClock.Instant) {
        self.callsPerSecond = max(callsPerSecond, 0)
        self.burst = max(burst, 1)
        self.now = clock
    }

    public func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
        guard take(context.connection) else {
            throw RPCError(.resourceExhausted, "rpc: rate limit of \(callsPerSecond) calls/s exceeded on this connection")
        }
        return try await next(context)
    }

    /// Takes one token from the connection's bucket; false when it is empty.
    func take(_ connection: RPCConnectionID) -> Bool {
        let now = now()
        return buckets.withLock { buckets in
            var bucket = buckets[connection] ?? Bucket(tokens: Double(burst), updated: now)
            let elapsed = bucket.updated.duration(to: now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(Double(burst), bucket.tokens + max(seconds, 0) * callsPerSecond)
            bucket.updated = now
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[connection] = bucket
            return allowed
        }
    }

    public func connectionClosed(_ connection: RPCConnectionID) {
        _ = buckets.withLock { $0.removeValue(forKey: connection) }
    }

    /// Connections with a bucket right now.
    var trackedConnections: Int { buckets.withLock { $0.count } }
}
