import ArgumentParser
import Foundation
import Synchronization
import SwiftRPC

/// `rpcbench await-floor`: what the Swift concurrency runtime alone costs per awaited call.
struct AwaitFloorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "await-floor",
        abstract: "Measure the concurrency runtime's own cost per awaited call: no socket, no encoding.",
        discussion: """
            --tasks tasks each await a continuation the way `RPCClient.call` does: a \
            cancellation handler around an unsafe continuation. When every task is waiting, \
            the last to arrive resumes them all, as a batch of replies would. Nothing else \
            happens, so the CPU time per await is the floor of the async API's cost over the \
            callback API's on this toolchain. It is nearly all the concurrency runtime's: the \
            event loop's job queue, the one part SwiftRPC owns, is under 2% of it.

            Examples:
              rpcbench await-floor --cpu 1                      # tasks preferring an event loop
              rpcbench await-floor --cpu 1 --executor global    # tasks on the global executor
            """
    )

    enum Executor: String, ExpressibleByArgument, CaseIterable {
        /// Tasks prefer an `RPCEventLoop` (the load command's `--api async-loop`).
        case loop
        /// Tasks run on the global concurrent executor (`--api async`).
        case global
    }

    @Option(help: "Where the tasks run: loop (tasks preferring an event loop) or global.")
    var executor: Executor = .loop

    @Option(help: "Tasks awaiting at once (W2 keeps 4 x 32 = 128 calls in flight).")
    var tasks = 128

    @OptionGroup var options: LoadOptions

    func validate() throws {
        guard tasks >= 1 else { throw ValidationError("--tasks must be at least 1") }
        guard options.duration > 0, options.warmup >= 0 else {
            throw ValidationError("--duration must be positive and --warmup not negative")
        }
    }

    func run() async throws {
        let loop = try RPCEventLoop(cpu: options.cpu >= 0 ? options.cpu : nil)
        if options.cpu >= 0 { try RPCEventLoop.pinProcess(toCPU: options.cpu) }
        let floor = AwaitFloor(tasks: tasks, confined: executor == .loop)
        floor.start(preferring: executor == .loop ? loop : nil)

        try await Task.sleep(for: .seconds(options.warmup))
        let (awaits0, cpu0, t0) = (floor.resumed.load(ordering: .relaxed), processCPUMicros(), nowNanos())
        try await Task.sleep(for: .seconds(options.duration))
        let (awaits1, cpu1, t1) = (floor.resumed.load(ordering: .relaxed), processCPUMicros(), nowNanos())
        await floor.stop()

        let awaits = Double(awaits1 - awaits0)
        let perSecond = awaits / (Double(t1 - t0) / 1e9)
        let cpuNanos = Double(cpu1 - cpu0) * 1000 / max(awaits, 1)
        if options.json {
            print(#"{"executor": "\#(executor.rawValue)", "tasks": \#(tasks), "awaits_per_sec": \#(Int(perSecond)), "cpu_ns_per_await": \#(Int(cpuNanos))}"#)
        } else {
            print("executor \(executor.rawValue), \(tasks) tasks: \(Int(perSecond)) awaits/s, \(Int(cpuNanos)) ns of CPU per await")
        }
    }
}

/// The rendezvous: tasks park their continuations; the last to arrive resumes the batch.
///
/// `@unchecked Sendable`: with `confined`, every task prefers one event loop, so all of them
/// run on its thread one at a time and `state` needs no lock; otherwise `state` is only
/// touched under `lock`.
private final class AwaitFloor: @unchecked Sendable {
    struct State {
        var waiting: [UnsafeContinuation<Void, Never>] = []
        var live: Int
    }

    let tasks: Int
    let confined: Bool
    let resumed = Atomic<UInt64>(0)
    private let running = Atomic<Bool>(true)
    private var state: State
    private let lock = Mutex(())
    private var workers: [Task<Void, Never>] = []

    init(tasks: Int, confined: Bool) {
        self.tasks = tasks
        self.confined = confined
        state = State(live: tasks)
    }

    func start(preferring loop: RPCEventLoop?) {
        workers = (0..<tasks).map { _ in
            Task(executorPreference: loop) { [self] in
                while running.load(ordering: .relaxed) { await awaitLikeACall() }
                if let batch = withState({ $0.live -= 1; return $0.takeBatchIfComplete() }) { resume(batch) }
            }
        }
    }

    func stop() async {
        running.store(false, ordering: .relaxed)
        for task in workers { await task.value }
    }

    /// The shape of `RPCClient.call`, with the reply arriving from the batch's last task.
    private func awaitLikeACall() async {
        await _unsafeInheritExecutor_withTaskCancellationHandler {
            await withUnsafeContinuation { continuation in
                let batch = withState { state -> [UnsafeContinuation<Void, Never>]? in
                    state.waiting.append(continuation)
                    return state.takeBatchIfComplete()
                }
                if let batch { resume(batch) }
            }
        } onCancel: {}
    }

    private func resume(_ batch: [UnsafeContinuation<Void, Never>]) {
        resumed.add(UInt64(batch.count), ordering: .relaxed)
        for continuation in batch { continuation.resume() }
    }

    private func withState<R>(_ body: (inout State) -> R) -> R {
        if confined { return body(&state) }
        return lock.withLock { _ in body(&state) }
    }
}

extension AwaitFloor.State {
    /// Every live task is waiting: hand back the batch to resume.
    mutating func takeBatchIfComplete() -> [UnsafeContinuation<Void, Never>]? {
        guard live > 0, waiting.count == live else { return nil }
        defer { waiting.removeAll(keepingCapacity: true) }
        return waiting
    }
}
