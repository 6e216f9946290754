// The method table: which handler a method name finds, and the built-ins.

/// The method table: filled while a server is configured, frozen (immutable, so read
/// without locks from every loop thread) once it starts.
struct Router: Sendable {
    private(set) var handlers: [String: RegisteredHandler] = [:] {
        didSet { index = MethodIndex(handlers) }
    }
    /// `handlers` again, keyed by the names' bytes: what requests off the wire look up.
    private(set) var index = MethodIndex([:])
    /// Per-method counters for `rpc.stats`; nil when the server keeps none.
    var statistics: MethodStatistics?
    /// Told when a connection closes (interceptors that keep per-connection state).
    var connectionObservers: [any RPCServerInterceptor] = []
    /// Stream methods by name (looked up once per stream, at its open).
    private(set) var streamHandlers: [String: StreamHandler] = [:]

    /// Adds a stream method, unless its name is bad or taken (by a call or a stream).
    mutating func add(stream handler: StreamHandler) throws(RPCError) {
        try MethodName.validate(handler.name)
        if handlers[handler.name] != nil || streamHandlers[handler.name] != nil {
            throw RPCError(.invalidArgument, "rpc: method already defined: \(handler.name)")
        }
        streamHandlers[handler.name] = handler
    }

    /// The stream method registered as `name`.
    func streamHandler(named name: String) -> StreamHandler? { streamHandlers[name] }

    /// Adds handlers all at once, or none of them when any name is bad or taken.
    mutating func add(_ new: [RegisteredHandler]) throws(RPCError) {
        var seen = Set<String>()
        for h in new {
            try MethodName.validate(h.name)
            if handlers[h.name] != nil || streamHandlers[h.name] != nil || !seen.insert(h.name).inserted {
                throw RPCError(.invalidArgument, "rpc: method already defined: \(h.name)")
            }
        }
        var updated = handlers
        for h in new { updated[h.name] = h }
        handlers = updated // one rebuild of the index
    }

    /// The handler registered as `name` (names made in memory: tests, built-in checks).
    func handler(named name: String) -> RegisteredHandler? { handlers[name] }

    /// The handler for a name off the wire, unretained (see `MethodIndex.borrowedHandler`):
    /// the per-request path, with no reference counting.
    func borrowedHandler(forWireName name: UnsafeRawBufferPointer) -> Unmanaged<RegisteredHandler>? {
        index.borrowedHandler(for: name)
    }

    /// Answers the built-in called `name`, or says no such method exists.
    func answerBuiltin(_ name: String, writer: MessagePackWriter) -> HandlerOutcome {
        if name == "rpc.methods" {
            do { try MessagePackEncoder().encode(methodNames, into: writer) } catch {
                return .failed(RPCError(.internal, "cannot encode the method list"))
            }
            return .written
        }
        if name == "rpc.stats" {
            do { try MessagePackEncoder().encode(statisticsTable, into: writer) } catch {
                return .failed(RPCError(.internal, "cannot encode the statistics"))
            }
            return .written
        }
        return .failed(RPCError(.unimplemented, "rpc: can't find method \(Self.shown(name))"))
    }

    /// How much of an unknown method's name an error echoes back: enough to recognise a typo,
    /// not the whole of an 80 KB name a hostile peer sent (cut on a character boundary).
    static let shownNameBytes = 256

    static func shown(_ name: String) -> String {
        let count = name.utf8.count
        guard count > shownNameBytes else { return name }
        return "\(name.utf8Prefix(maxBytes: shownNameBytes))... (\(count) bytes)"
    }

    /// Every callable name, built-ins included, sorted (the answer to `rpc.methods`).
    var methodNames: [String] {
        (Array(handlers.keys) + Array(streamHandlers.keys) + ["rpc.methods", "rpc.ping", "rpc.stats"]).sorted()
    }

    /// The answer to `rpc.stats`: one row per registered method, sorted by name; counts are
    /// zero when the server keeps no statistics.
    var statisticsTable: [RPCMethodStatistics] {
        (Array(handlers.keys) + Array(streamHandlers.keys)).sorted().map { name in
            statistics?.snapshot(name) ?? RPCMethodStatistics(method: name, calls: 0, errors: 0, errorsByCode: [:])
        }
    }

    /// Replaces every handler with `transform(handler)`, the streams' too (used once,
    /// before the server starts).
    mutating func mapHandlers(_ transform: (RegisteredHandler) -> RegisteredHandler) {
        handlers = handlers.mapValues(transform)
        streamHandlers = streamHandlers.mapValues { $0.mapped(transform) }
    }
}
