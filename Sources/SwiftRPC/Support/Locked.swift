internal import Glibc

/// A value behind a glibc mutex, for state that several threads contend for (shared with
/// the package's other modules: discovery and rpcbench use it too).
///
/// Why not `Synchronization.Mutex`: on Linux it hands a contended lock to the waiter inside
/// the kernel (a priority-inheritance futex), where ThreadSanitizer cannot see it, so every
/// access after a contended hand-off is reported as a data race and a TSan run of the suite
/// is never clean. TSan intercepts `pthread_mutex_*`. The uncontended cost is the same:
/// one atomic operation to lock and one to unlock. The value and the mutex share one
/// allocation (the mutex must not move, so it cannot live in a Swift stored property).
package final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, with `mutex` held.
    private let storage: LockedStorage<Value>

    package init(_ value: Value) {
        storage = LockedStorage.make(value)
    }

    /// Runs `body` with the lock held and exclusive access to the value.
    @inline(__always)
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        try storage.withLock(body)
    }
}

/// The header is the value; the single element is the mutex.
private final class LockedStorage<Value>: ManagedBuffer<Value, pthread_mutex_t> {
    static func make(_ value: Value) -> LockedStorage<Value> {
        let buffer = create(minimumCapacity: 1) { _ in value }
        buffer.withUnsafeMutablePointerToElements { mutex in
            mutex.initialize(to: pthread_mutex_t())
            pthread_mutex_init(mutex, nil)
        }
        // `create` is declared to return the base class; the object is of this class.
        return unsafeDowncast(buffer, to: LockedStorage<Value>.self)
    }

    @inline(__always)
    func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        try withUnsafeMutablePointers { value, mutex throws(Failure) in
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return try body(&value.pointee)
        }
    }

    // ManagedBuffer destroys the header (the value) itself; the elements are ours.
    deinit {
        withUnsafeMutablePointerToElements { mutex in
            pthread_mutex_destroy(mutex)
            mutex.deinitialize(count: 1)
        }
    }
}
