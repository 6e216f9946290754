internal import CRPCCore
import Dispatch

/// One event-loop thread doing its I/O through io_uring, or epoll where io_uring is
/// refused (see ``backend``). Clients run their connections on a
/// loop; completion callbacks (``RPCClient/go(_:_:metadata:timeout:completion:)``) run on
/// its thread. Many clients may share one loop.
///
/// ```swift
/// let loop = try RPCEventLoop(cpu: 1)      // pinned to CPU 1
/// let client = try RPCClient(host: "127.0.0.1", port: 7000,
///                            configuration: .init(eventLoop: loop))
/// ```
public final class RPCEventLoop: Sendable {
    let handle: LoopHandle
    let jobs = LoopJobs()

    /// Starts a loop thread, pinned to `cpu` when given.
    ///
    /// - Throws: `RPCError` when the loop cannot start (out of memory or descriptors,
    ///   `.invalidArgument` for an unknown `SWIFTRPC_BACKEND`, `.unavailable` when
    ///   `SWIFTRPC_BACKEND=uring` forces io_uring and it is refused).
    public init(cpu: Int? = nil) throws(RPCError) {
        var config = crpc_loop_config()
        if let cpu {
            config.cpu = Int32(cpu)
            config.pin = 1
        }
        var loop: OpaquePointer?
        try CoreErrors.check(crpc_loop_create(&config, &loop), "cannot create an event loop")
        let rc = crpc_loop_start(loop)
        if rc < 0 {
            crpc_loop_destroy(loop)
            throw CoreErrors.error(rc, "cannot start an event loop")
        }
        handle = LoopHandle(pointer: loop!)
    }

    /// The I/O backend the loop runs: `"io_uring"`, or `"epoll"` where io_uring is refused
    /// (or `SWIFTRPC_BACKEND=epoll` asks for it). Only the speed differs.
    public var backend: String {
        crpc_loop_backend(handle.pointer).map { String(cString: $0) } ?? "none"
    }

    private static let sharedLoop = Locked<RPCEventLoop?>(nil)

    /// The process-wide default loop, started on first use.
    public static func shared() throws(RPCError) -> RPCEventLoop {
        try sharedLoop.withLock { (loop: inout RPCEventLoop?) throws(RPCError) -> RPCEventLoop in
            if let loop { return loop }
            let made = try RPCEventLoop()
            loop = made
            return made
        }
    }

    /// Pins every thread of this process to `cpu` (threads started later inherit it), so a
    /// benchmark's client and server can be kept on separate CPUs.
    ///
    /// - Throws: `RPCError` when the CPU does not exist or the kernel refuses.
    public static func pinProcess(toCPU cpu: Int) throws(RPCError) {
        try CoreErrors.check(crpc_pin_process(Int32(clamping: cpu)), "cannot pin to CPU \(cpu)")
    }

    /// The monotonic clock in nanoseconds, as read once when the loop woke for its current
    /// iteration: a free timestamp for code running on the loop (completions, tasks that
    /// prefer the loop), shared by everything that iteration handles.
    public var iterationNanoseconds: UInt64 { crpc_loop_now_ns(handle.pointer) }

    /// True on this loop's own thread.
    var isCurrent: Bool { crpc_loop_is_current(handle.pointer) != 0 }
}

/// Owns a `crpc_loop`. `@unchecked Sendable`: the loop's public functions are thread-safe
/// (see crpc.h); only `deinit` tears it down, when no client can use it any more.
final class LoopHandle: @unchecked Sendable {
    let pointer: OpaquePointer

    init(pointer: OpaquePointer) { self.pointer = pointer }

    deinit {
        let loop = pointer
        if crpc_loop_is_current(loop) != 0 {
            // The last reference went away inside one of this loop's own callbacks: a
            // thread cannot join itself, so let another one stop it.
            let box = LoopHandleStopper(loop)
            DispatchQueue.global().async { box.stop() }
        } else {
            crpc_loop_stop(loop)
            crpc_loop_destroy(loop)
        }
    }
}

/// Carries a loop pointer to the thread that stops it. `@unchecked Sendable`: used once,
/// by that thread alone.
private final class LoopHandleStopper: @unchecked Sendable {
    let loop: OpaquePointer
    init(_ loop: OpaquePointer) { self.loop = loop }
    func stop() {
        crpc_loop_stop(loop)
        crpc_loop_destroy(loop)
    }
}

