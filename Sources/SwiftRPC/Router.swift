internal import CMsgPack
internal import CRPCCore

/// A request's params as they arrived: their raw bytes (the params array), and the tree
/// msgpack-c unpacks from them on first use. Valid only while the request is dispatched.
struct RequestParams {
    let bytes: UnsafeRawBufferPointer
    private let message: UnsafePointer<crpc_message>?
    private let unpacked: UnsafePointer<msgpack_object>?

    /// Params of a request off the wire; the tree is unpacked only if a handler needs it.
    init(message: UnsafePointer<crpc_message>, bytes: UnsafeRawBufferPointer) {
        self.message = message
        self.unpacked = nil
        self.bytes = bytes
    }

    /// Params already unpacked (tests build these in memory).
    init(tree: UnsafePointer<msgpack_object>, bytes: UnsafeRawBufferPointer) {
        self.message = nil
        self.unpacked = tree
        self.bytes = bytes
    }

    /// The params tree.
    func tree() throws -> UnsafePointer<msgpack_object> {
        if let unpacked { return unpacked }
        guard let message, let value = crpc_message_value(message) else {
            throw RPCError(.resourceExhausted, "out of memory unpacking params")
        }
        return UnsafeRawPointer(value).assumingMemoryBound(to: msgpack_object.self)
    }
}

/// Thrown when params do not decode into a handler's argument type (status 3).
struct InvalidParams: Error, CustomStringConvertible {
    let description: String
}

/// One registered method with its types erased.
// A class, not a struct: a request's lookup then hands out one reference instead of
// copying (and retaining) every field; it is immutable, so Sendable as it stands.
final class RegisteredHandler: Sendable {
    enum Body: Sendable {
        /// Runs on the loop thread without a hop: decodes, handles, encodes the reply into
        /// the writer, or returns the byte range of the params to send back as the result.
        case inline(InlineRun)
        /// Decodes on the loop thread (the tree dies with the frame); the returned job runs
        /// in a task and returns the encoded reply.
        case async(@Sendable (RequestParams) throws -> @Sendable (RPCContext) async throws -> [UInt8])
    }

    /// Decodes on the loop thread, returns the work to run in a task.
    typealias Job = @Sendable (RequestParams) throws -> @Sendable (RPCContext) async throws -> [UInt8]
    typealias InlineRun = @Sendable (RequestParams, RPCContext, MessagePackWriter) throws -> Range<Int>?

    let name: String
    let body: Body
    /// Whether `body` is `.inline`.
    var isInline: Bool {
        if case .inline = body { return true }
        return false
    }
    /// The inline body's closure (a stub for an async body), stored on its own: a request
    /// calls it on the borrowed handler, where taking it out of `body` (or out of an
    /// optional) would retain and release it.
    private let inlineRun: InlineRun
    /// The same handler run as a task, for when async interceptors must run before it: an
    /// inline body's params die with the frame, so this form decodes (or copies) them first.
    let asTask: Job

    init(name: String, body: Body, asTask: Job? = nil) {
        self.name = name
        self.body = body
        switch body {
        case .async(let job):
            self.asTask = job
            self.inlineRun = { _, _, _ in preconditionFailure("an async handler has no inline body") }
        case .inline(let run):
            self.asTask = asTask ?? { _ in throw RPCError(.internal, "no task form for \(name)") }
            self.inlineRun = run
        }
    }

    /// Runs the inline body (only when `isInline`).
    func runInline(_ params: RequestParams, _ context: RPCContext, _ writer: MessagePackWriter) throws -> Range<Int>? {
        try inlineRun(params, context, writer)
    }
}

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

    /// Adds handlers all at once, or none of them when any name is bad or taken.
    mutating func add(_ new: [RegisteredHandler]) throws(RPCError) {
        var seen = Set<String>()
        for h in new {
            try MethodName.validate(h.name)
            if handlers[h.name] != nil || !seen.insert(h.name).inserted {
                throw RPCError(.invalidArgument, "rpc: method already defined: \(h.name)")
            }
        }
        var updated = handlers
        for h in new { updated[h.name] = h }
        handlers = updated // one rebuild of the index
    }

    /// The handler for a name off the wire, unretained (see `MethodIndex.borrowedHandler`):
    /// the per-request path, with no reference counting.
    func borrowedHandler(forWireName name: UnsafeRawBufferPointer) -> Unmanaged<RegisteredHandler>? {
        index.borrowedHandler(for: name)
    }

    /// What a request turns into: the transport seam. The server feeds it requests off the
    /// wire; tests feed it params made in memory, with no socket in sight.
    enum Dispatch {
        /// The reply is in the writer.
        case written
        /// The reply is these bytes of the params, sent back without a copy.
        case echo(Range<Int>)
        /// The call failed; send this status.
        case failed(RPCError)
        /// Run this in a task; it returns the encoded reply.
        case later(@Sendable (RPCContext) async throws -> [UInt8])
    }

    /// Runs the part of a request that happens on the loop thread. `writer` must be empty.
    func dispatch(_ name: String, params: RequestParams, context: RPCContext,
                  writer: MessagePackWriter) -> Dispatch {
        guard let handler = handlers[name] else { return dispatch(builtin: name, writer: writer) }
        return dispatch(registered: handler, params: params, context: context, writer: writer)
    }

    /// Answers the built-in called `name`, or says no such method exists.
    func dispatch(builtin name: String, writer: MessagePackWriter) -> Dispatch {
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

    /// Runs a registered handler: inline to the end, or up to the job a task will run.
    func dispatch(registered handler: RegisteredHandler, params: RequestParams, context: RPCContext,
                  writer: MessagePackWriter) -> Dispatch {
        do {
            if handler.isInline {
                return try handler.runInline(params, context, writer).map(Dispatch.echo) ?? .written
            }
            guard case .async(let prepare) = handler.body else { preconditionFailure("isInline is false") }
            return .later(try prepare(params))
        } catch {
            return .failed(RPCError(handlerError: error))
        }
    }

    /// Every callable name, built-ins included, sorted (the answer to `rpc.methods`).
    var methodNames: [String] {
        (Array(handlers.keys) + ["rpc.methods", "rpc.ping", "rpc.stats"]).sorted()
    }

    /// The answer to `rpc.stats`: one row per registered method, sorted by name; counts are
    /// zero when the server keeps no statistics.
    var statisticsTable: [RPCMethodStatistics] {
        handlers.keys.sorted().map { name in
            statistics?.snapshot(name) ?? RPCMethodStatistics(method: name, calls: 0, errors: 0, errorsByCode: [:])
        }
    }

    /// Replaces every handler with `transform(handler)` (used once, before the server starts).
    mutating func mapHandlers(_ transform: (RegisteredHandler) -> RegisteredHandler) {
        handlers = handlers.mapValues(transform)
    }
}

// MARK: - Building handlers

enum HandlerFactory {
    static func typedAsync<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) async throws -> Reply
    ) -> RegisteredHandler {
        RegisteredHandler(name: method.name, body: .async { params in
            let args = try decodeArgs(Args.self, params)
            return { context in
                let reply = try await handler(args, context)
                return try MessagePackEncoder().encode(reply)
            }
        })
    }

    static func typedInline<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) throws -> Reply
    ) -> RegisteredHandler {
        RegisteredHandler(name: method.name, body: .inline { params, context, writer in
            let args = try decodeArgs(Args.self, params)
            let reply = try handler(args, context)
            try MessagePackEncoder().encode(reply, into: writer)
            return nil
        }, asTask: { params in
            let args = try decodeArgs(Args.self, params)
            return { context in try MessagePackEncoder().encode(try handler(args, context)) }
        })
    }

    static func rawInline(
        _ name: String,
        _ handler: @escaping @Sendable (RPCRawRequest) throws -> RPCRawReply
    ) -> RegisteredHandler {
        RegisteredHandler(name: name, body: .inline { params, context, writer in
            switch try handler(RPCRawRequest(params: params.bytes, context: context)) {
            case .echo(let range):
                guard range.lowerBound >= 0, range.upperBound <= params.bytes.count, !range.isEmpty else {
                    throw RPCError(.internal, "raw reply range \(range) is outside the params")
                }
                return range
            case .bytes(let bytes):
                bytes.withUnsafeBytes { writer.appendRaw($0) }
                return nil
            }
        }, asTask: { params in
            let copy = Array(params.bytes)
            return { context in
                let reply = try copy.withUnsafeBytes { bytes in
                    try handler(RPCRawRequest(params: bytes, context: context))
                }
                switch reply {
                case .echo(let range):
                    guard range.lowerBound >= 0, range.upperBound <= copy.count, !range.isEmpty else {
                        throw RPCError(.internal, "raw reply range \(range) is outside the params")
                    }
                    return Array(copy[range])
                case .bytes(let bytes):
                    return bytes
                }
            }
        })
    }

    static func raw(
        _ name: String,
        _ handler: @escaping @Sendable ([UInt8], RPCContext) async throws -> [UInt8]
    ) -> RegisteredHandler {
        RegisteredHandler(name: name, body: .async { params in
            let bytes = Array(params.bytes)
            return { context in try await handler(bytes, context) }
        })
    }

    private static func decodeArgs<Args: Decodable>(_ type: Args.Type, _ params: RequestParams) throws -> Args {
        do {
            return try MessagePackDecoder().decodeFirstParam(type, fromTree: params.tree())
        } catch {
            throw InvalidParams(description: "invalid params for \(Args.self): \(error)")
        }
    }
}

extension RPCError {
    /// The status a handler's error is sent with: its own for `RPCError`, 3 for params
    /// that did not decode, 2 with the error's description for anything else.
    init(handlerError error: any Error) {
        switch error {
        case let e as RPCError: self = e
        case let e as InvalidParams: self = RPCError(.invalidArgument, e.description)
        default: self = RPCError(.unknown, String(describing: error))
        }
    }
}
