internal import CRPCCore

/// An event loop is also a task executor: tasks that prefer it run on the loop's own
/// thread, so awaiting a call resumes without a thread hop and the next call is encoded
/// straight into the connection's output, as in the callback API.
///
/// ```swift
/// let loop = try RPCEventLoop()
/// let client = try await RPCClient.connect(host: "127.0.0.1", port: port,
///                                          configuration: .init(eventLoop: loop))
/// await withTaskExecutorPreference(loop) {
///     let product = try? await client.call(Arith.multiply, .init(A: 6, B: 7))
/// }
/// ```
///
/// Jobs running on the loop must not block it, as with completion callbacks.
extension RPCEventLoop: TaskExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        let unownedJob = UnownedJob(job)
        let first = jobs.queue.withLock { queue in
            queue.append(unownedJob)
            return queue.count == 1
        }
        guard first else { return } // a drain is already scheduled and will take this one
        let me = Unmanaged.passRetained(self).toOpaque()
        if crpc_loop_post(handle.pointer, drainJobsTrampoline, me) != 0 {
            // The loop has stopped: run what is queued on the global executor instead.
            Unmanaged<RPCEventLoop>.fromOpaque(me).release()
            for job in jobs.queue.withLock({ q -> [UnownedJob] in defer { q = [] }; return q }) {
                globalConcurrentExecutor.enqueue(ExecutorJob(job))
            }
        }
    }

    /// Runs every job queued so far. Loop thread only.
    fileprivate func drainJobs() {
        assert(isCurrent, "the loop's jobs ran off its thread") // debug builds only
        var batch: [UnownedJob] = []
        jobs.queue.withLock { swap(&batch, &$0) }
        let executor = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(on: executor) }
    }
}

/// Jobs waiting for their loop.
final class LoopJobs: Sendable {
    let queue = Locked<[UnownedJob]>([])
}

private let drainJobsTrampoline: @convention(c) (UnsafeMutableRawPointer?) -> Void = { arg in
    Unmanaged<RPCEventLoop>.fromOpaque(arg!).takeRetainedValue().drainJobs()
}
