internal import CRPCCore
import Dispatch

/// Hands the allocator's free memory back to the kernel (``crpc_release_free_memory``) on a
/// utility queue, at most once a second for the whole process (the allocator is shared):
/// requests made meanwhile are served by the one already pending. It waits a little first:
/// the tasks just cancelled free their memory as they wind down.
enum FreeMemory {
    private static let queue = DispatchQueue(label: "SwiftRPC.release-memory", qos: .utility)
    private static let schedule = Locked((pending: false, last: UInt64(0)))

    static func releaseSoon() {
        let now = DispatchTime.now().uptimeNanoseconds
        let delay = schedule.withLock { s -> UInt64? in
            guard !s.pending else { return nil }
            s.pending = true
            let windDown: UInt64 = 200_000_000
            return max(s.last &+ 1_000_000_000 > now ? s.last &+ 1_000_000_000 &- now : 0, windDown)
        }
        guard let delay else { return }
        queue.asyncAfter(deadline: .now() + .nanoseconds(Int(delay))) {
            crpc_release_free_memory()
            schedule.withLock { $0 = (pending: false, last: DispatchTime.now().uptimeNanoseconds) }
        }
    }
}
