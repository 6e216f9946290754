internal import CRPCCore
import Synchronization

/// The async handlers a server is running, by connection and msgid, so that a cancel frame
/// (or a passed deadline) can cancel the right task.
final class RunningCalls: Sendable {
    struct Key: Hashable, Sendable {
        var conn: UInt64
        var msgid: UInt32
    }

    private let tasks = Locked<[Key: Task<Void, Never>]>([:])

    /// Records the task `make` starts. The lock is held while it is made, so the task's own
    /// `finished` cannot run before it is recorded.
    func start(_ key: Key, _ make: () -> Task<Void, Never>) {
        tasks.withLock { $0[key] = make() }
    }

    func finished(_ key: Key) {
        _ = tasks.withLock { $0.removeValue(forKey: key) }
    }

    /// Cancels the handler of `key` if it is still running.
    func cancel(_ key: Key) {
        tasks.withLock { $0[key] }?.cancel()
    }

    /// Cancels every handler still running for `conn` (its connection has closed).
    func cancelAll(conn: UInt64) {
        let tasks = tasks.withLock { $0.filter { $0.key.conn == conn }.map(\.value) }
        for task in tasks { task.cancel() }
    }

    /// Handlers running now.
    var count: Int { tasks.withLock { $0.count } }
}

/// Makes sure a request is answered once: by its handler, or by its deadline.
final class Answer: Sendable {
    private let claimed = Atomic<Bool>(false)

    /// True for the first caller only.
    func claim() -> Bool {
        !claimed.exchange(true, ordering: .acquiringAndReleasing)
    }
}
