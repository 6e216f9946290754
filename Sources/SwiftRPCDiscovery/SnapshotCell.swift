import SwiftRPC
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Holds one immutable object that readers take without a lock and a writer replaces.
///
/// The hot path (every call asks for the current server list) must not serialize on a
/// lock, and Swift has no atomic strong reference. So the object lives behind an atomic
/// pointer, and a reader marks itself as reading for the few instructions between loading
/// the pointer and retaining it: userspace RCU's two-phase scheme. Readers announce
/// themselves in one of two counters, picked by the epoch's parity; a writer swaps the
/// pointer, then twice flips the epoch and waits until the counter of the previous parity
/// drains. After both flips no reader can still hold the old pointer unretained, and the
/// writer drops its reference. Readers never wait; writers (rare: discovery changes) wait
/// for readers already in their few-instruction window only.
///
/// Sendable: every field is an atomic or a lock (serializing replacements), and the
/// object behind `pointer`'s bits is itself Sendable.
final class SnapshotCell<Value: AnyObject & Sendable>: Sendable {
    private let pointer: Atomic<UInt>
    private let epoch = Atomic<UInt>(0)
    private let readers0 = Atomic<Int>(0)
    private let readers1 = Atomic<Int>(0)
    private let writer = Locked<Void>(())

    init(_ value: Value) {
        pointer = Atomic(UInt(bitPattern: Unmanaged.passRetained(value).toOpaque()))
    }

    deinit {
        let bits = pointer.load(ordering: .sequentiallyConsistent)
        Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).release()
    }

    /// The current value, retained for the caller. Lock-free: two atomic adds and a load.
    func load() -> Value {
        let parity = epoch.load(ordering: .sequentiallyConsistent) & 1
        enter(parity)
        let bits = pointer.load(ordering: .sequentiallyConsistent)
        // The retain is explicit so it cannot drift past `leave`.
        let value = Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits)!).retain()
        leave(parity)
        return value.takeRetainedValue()
    }

    /// Replaces the value; returns once no reader can still reach the old one unretained.
    func store(_ value: Value) {
        writer.withLock { _ in
            let new = UInt(bitPattern: Unmanaged.passRetained(value).toOpaque())
            let old = pointer.exchange(new, ordering: .sequentiallyConsistent)
            for _ in 0..<2 {
                let previous = epoch.add(1, ordering: .sequentiallyConsistent).oldValue & 1
                while reading(previous) != 0 {
                    sched_yield()
                }
            }
            Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: old)!).release()
        }
    }

    private func enter(_ parity: UInt) {
        if parity == 0 { readers0.add(1, ordering: .sequentiallyConsistent) }
        else { readers1.add(1, ordering: .sequentiallyConsistent) }
    }

    private func leave(_ parity: UInt) {
        if parity == 0 { readers0.subtract(1, ordering: .sequentiallyConsistent) }
        else { readers1.subtract(1, ordering: .sequentiallyConsistent) }
    }

    private func reading(_ parity: UInt) -> Int {
        parity == 0 ? readers0.load(ordering: .sequentiallyConsistent)
                    : readers1.load(ordering: .sequentiallyConsistent)
    }
}
