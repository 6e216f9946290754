/// Async handlers running for notifications, counted per connection. A notification gets no
/// reply, so the core's limit on calls in flight per connection (which ends at the reply)
/// never sees it; this holds notifications to the same limit, so a client flooding a slow
/// method with notifications cannot make the server start tasks without bound.
final class RunningNotifications: Sendable {
    private let limit: Int
    private let counts = Locked<[UInt64: Int]>([:])

    init(limit: Int) { self.limit = max(limit, 1) }

    /// Takes a place for one more on `conn`; false when `limit` already run there.
    func claim(_ conn: UInt64) -> Bool {
        counts.withLock { counts in
            let running = counts[conn, default: 0]
            guard running < limit else { return false }
            counts[conn] = running + 1
            return true
        }
    }

    /// Gives back the place a finished handler held.
    func release(_ conn: UInt64) {
        counts.withLock { counts in
            let left = counts[conn, default: 1] - 1
            counts[conn] = left > 0 ? left : nil
        }
    }
}
