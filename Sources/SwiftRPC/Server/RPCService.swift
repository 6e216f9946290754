/// A group of methods registered in one step, in the spirit of net/rpc's `Register`.
///
/// ```swift
/// struct ArithService: RPCService {
///     func register(into methods: inout RPCMethodTable) {
///         methods.add(Arith.multiply) { args, _ in args.A * args.B }
///         methods.add(Arith.divide) { args, _ in try Arith.quotient(args) }
///     }
/// }
/// try server.register(ArithService())
/// ```
public protocol RPCService: Sendable {
    /// Adds every method of the service to `methods`.
    func register(into methods: inout RPCMethodTable)
}

/// The methods a service lists; ``RPCServer/register(_:)`` adds them all or none.
public struct RPCMethodTable {
    var handlers: [RegisteredHandler] = []

    init() {}

    /// Adds an async handler; it runs as its own task, concurrently with other calls.
    public mutating func add<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) async throws -> Reply
    ) {
        handlers.append(HandlerFactory.typedAsync(method, handler))
    }

    /// Adds a handler that runs on the event-loop thread itself, with no hop to a task.
    /// It must not block: use it for quick, CPU-light methods.
    public mutating func addInline<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) throws -> Reply
    ) {
        handlers.append(HandlerFactory.typedInline(method, handler))
    }

    /// Adds a raw handler that runs on the event-loop thread (see
    /// ``RPCServer/registerRawInline(_:_:)``).
    public mutating func addRawInline(
        _ name: String,
        _ handler: @escaping @Sendable (RPCRawRequest) throws -> RPCRawReply
    ) {
        handlers.append(HandlerFactory.rawInline(name, handler))
    }

    /// Adds a handler that brings its own encoding: it receives the raw MessagePack params
    /// array and returns one encoded MessagePack value as the result.
    public mutating func addRaw(
        _ name: String,
        _ handler: @escaping @Sendable ([UInt8], RPCContext) async throws -> [UInt8]
    ) {
        handlers.append(HandlerFactory.raw(name, handler))
    }
}
