import Synchronization

/// Per-method call and error counts, the table `rpc.stats` answers with (net/rpc's
/// `/debug/rpc`). Recording takes no lock: an inline call bumps a counter that only its
/// loop's thread writes (a plain load and store, no locked instruction); calls that run as
/// tasks and every error use an atomic add.
final class MethodStatistics: Sendable {
    private let methods: [String: MethodCounters]

    init(methods names: some Sequence<String>, loops: Int) {
        var methods: [String: MethodCounters] = [:]
        for name in names { methods[name] = MethodCounters(loops: loops) }
        self.methods = methods
    }

    func counters(_ name: String) -> MethodCounters? { methods[name] }

    func snapshot(_ name: String) -> RPCMethodStatistics? {
        methods[name].map { $0.snapshot(method: name) }
    }
}

/// One method's counters.
final class MethodCounters: Sendable {
    /// Status codes 0...16 get their own slot; anything else lands in the last one.
    static let codeSlots = 18
    private let loopShards: [LoopCallCounter]
    private let taskCalls = Atomic<UInt64>(0)
    private let errors: InlineArray<18, Atomic<UInt64>>

    init(loops: Int) {
        loopShards = (0..<max(loops, 1)).map { _ in LoopCallCounter() }
        errors = InlineArray { _ in Atomic<UInt64>(0) }
    }

    /// A call dispatched inline on loop `loop`'s thread; only that thread calls this.
    @inline(__always)
    func inlineCall(loop: Int) {
        // Tests dispatch with made-up connection ids: keep any loop index in range.
        let shard = loopShards[loop < loopShards.count ? loop : 0]
        // Single writer (the loop's thread), so load-then-store loses nothing and costs no
        // locked instruction; readers on other threads see a recent value.
        shard.calls.store(shard.calls.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// A call that runs as a task (any thread).
    func taskCall() { taskCalls.wrappingAdd(1, ordering: .relaxed) }

    /// A call that ended with `code` (any thread).
    func error(_ code: RPCError.Code) {
        let slot = (0..<Self.codeSlots - 1).contains(code.rawValue) ? code.rawValue : Self.codeSlots - 1
        errors[slot].wrappingAdd(1, ordering: .relaxed)
    }

    func snapshot(method: String) -> RPCMethodStatistics {
        var calls = taskCalls.load(ordering: .relaxed)
        for shard in loopShards { calls &+= shard.calls.load(ordering: .relaxed) }
        var byCode: [String: UInt64] = [:]
        var total: UInt64 = 0
        for slot in 0..<Self.codeSlots {
            let n = errors[slot].load(ordering: .relaxed)
            guard n > 0 else { continue }
            byCode[slot == Self.codeSlots - 1 ? "other" : String(slot)] = n
            total &+= n
        }
        return RPCMethodStatistics(method: method, calls: calls, errors: total, errorsByCode: byCode)
    }
}

/// One loop's call counter, in its own object so loops do not write the same cache line.
private final class LoopCallCounter: Sendable {
    let calls = Atomic<UInt64>(0)
    // Pads the object past one cache line so two loops' counters never share one.
    private let padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0)
}

/// One row of `rpc.stats`: how often a method was called and how its calls failed.
///
/// On the wire a row is a map `{"method": str, "calls": uint, "errors": uint,
/// "errorsByCode": {str: uint}}` (see docs/PROTOCOL.md): codes as decimal strings, codes
/// above 16 collected under `"other"`.
public struct RPCMethodStatistics: Codable, Sendable, Hashable {
    /// `"Service.Method"`.
    public var method: String
    /// Requests dispatched to the method since the server started, failed ones included.
    public var calls: UInt64
    /// Calls that ended with an error status.
    public var errors: UInt64
    /// Errors by status code, keyed by the code in decimal (`"16"`); `"other"` collects
    /// codes above 16.
    public var errorsByCode: [String: UInt64]

    /// A row (the server builds these; clients decode them).
    public init(method: String, calls: UInt64, errors: UInt64, errorsByCode: [String: UInt64]) {
        self.method = method
        self.calls = calls
        self.errors = errors
        self.errorsByCode = errorsByCode
    }
}

/// The `rpc.stats` built-in, for ``RPCClient/call(_:_:metadata:timeout:)``.
public enum RPCBuiltins {
    /// `rpc.stats`: per-method call and error counts (takes no arguments; send `nil`).
    public static let stats = RPCMethod<RPCNoArguments?, [RPCMethodStatistics]>("rpc.stats")
    /// `rpc.methods`: the sorted list of callable names.
    public static let methods = RPCMethod<RPCNoArguments?, [String]>("rpc.methods")
}

/// The argument type of built-ins that take none.
public struct RPCNoArguments: Codable, Sendable, Hashable {}
