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
///
/// `@unchecked Sendable`: `loopCalls` is written only through atomics, each loop's slot
/// by that loop's thread alone, and freed in `deinit` when no thread can reach it.
final class MethodCounters: @unchecked Sendable {
    /// Status codes 0...16 get their own slot; anything else lands in the last one.
    static let codeSlots = 18
    /// Each loop's counter sits `stride` words after the previous one: a cache line apart,
    /// so loops never write the same line.
    private static let stride = 8
    /// Raw memory rather than an array of objects: bumping a counter then involves no
    /// reference counting, only the load and the store.
    private let loopCalls: UnsafeMutablePointer<Atomic<UInt64>>
    private let loops: Int
    private let taskCalls = Atomic<UInt64>(0)
    private let errors: InlineArray<18, Atomic<UInt64>>

    init(loops: Int) {
        self.loops = max(loops, 1)
        loopCalls = .allocate(capacity: self.loops * Self.stride)
        for i in 0..<self.loops * Self.stride { (loopCalls + i).initialize(to: Atomic<UInt64>(0)) }
        errors = InlineArray { _ in Atomic<UInt64>(0) }
    }

    deinit {
        loopCalls.deinitialize(count: loops * Self.stride)
        loopCalls.deallocate()
    }

    /// A call dispatched inline on loop `loop`'s thread; only that thread calls this.
    @inline(__always)
    func inlineCall(loop: Int) {
        // Tests dispatch with made-up connection ids: keep any loop index in range.
        let slot = loopCalls + (loop < loops ? loop : 0) &* Self.stride
        // Single writer (the loop's thread), so load-then-store loses nothing and costs no
        // locked instruction; readers on other threads see a recent value.
        slot.pointee.store(slot.pointee.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
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
        for loop in 0..<loops { calls &+= (loopCalls + loop * Self.stride).pointee.load(ordering: .relaxed) }
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
