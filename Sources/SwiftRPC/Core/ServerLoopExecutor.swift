internal import CRPCCore

/// One of a server's event loops as a task executor: a stream handler registered with
/// `onLoop: true` runs its task here, on the thread that reads its connection, so each
/// element it writes goes straight into the connection's output — no hand-over to another
/// thread, no wake-up — and a write waiting for credit resumes where the credit arrives.
/// (The client's ``RPCEventLoop`` is a task executor the same way.)
///
/// Jobs running here must not block: they hold up every connection of the loop.
final class ServerLoopExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `server` is written once, before the first job (a stream's open, on this
    // loop), under the lock; `queue` is behind its lock.
    private let index: UInt32
    private let state = Locked<(server: OpaquePointer?, queue: [UnownedJob])>((nil, []))

    init(index: Int) { self.index = UInt32(index) }

    /// The C server to post through (a request names it before `start` has returned it).
    func bind(_ server: OpaquePointer) {
        state.withLock { if $0.server == nil { $0.server = server } }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let (server, first) = state.withLock { s -> (OpaquePointer?, Bool) in
            s.queue.append(unowned)
            return (s.server, s.queue.count == 1)
        }
        guard first else { return } // a drain is scheduled and will take this one
        let me = Unmanaged.passRetained(self).toOpaque()
        if server == nil || crpc_server_post(server, index, serverDrainTrampoline, me) != 0 {
            // The loop has stopped: what is queued runs on the global executor instead.
            Unmanaged<ServerLoopExecutor>.fromOpaque(me).release()
            for job in state.withLock({ s -> [UnownedJob] in defer { s.queue = [] }; return s.queue }) {
                globalConcurrentExecutor.enqueue(ExecutorJob(job))
            }
        }
    }

    /// Runs every job queued so far (loop thread).
    fileprivate func drain() {
        var batch: [UnownedJob] = []
        state.withLock { swap(&batch, &$0.queue) }
        let executor = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(on: executor) }
    }
}

private let serverDrainTrampoline: @convention(c) (UnsafeMutableRawPointer?) -> Void = { arg in
    Unmanaged<ServerLoopExecutor>.fromOpaque(arg!).takeRetainedValue().drain()
}
