/// Runs around every call a server handles: to check credentials, limit rates, log, or
/// change the metadata the handler sees.
///
/// Interceptors run in the order they are listed in
/// ``RPCServer/Configuration/interceptors``, the first outermost. Each either answers
/// itself (throws an ``RPCError``, which becomes the reply's status; or returns reply
/// bytes of its own) or calls `next` with the context to pass on, and may act on what
/// `next` returns or throws.
///
/// ```swift
/// struct RequireTenant: RPCServerInterceptor {
///     func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
///         guard let tenant = context.metadata["tenant"] else {
///             throw RPCError(.invalidArgument, "no tenant")
///         }
///         var context = context
///         context.metadata["tenant"] = tenant.lowercased()   // the handler sees this
///         return try await next(context)
///     }
/// }
/// let server = RPCServer(configuration: .init(interceptors: [RequireTenant()]))
/// ```
///
/// Interceptors are `async`, so with any installed every call runs as a task: handlers
/// registered inline (``RPCServer/registerInline(_:_:)``, ``RPCServer/registerRawInline(_:_:)``)
/// are then run as tasks too, after the interceptors. Built-ins (`rpc.ping`,
/// `rpc.methods`, `rpc.stats`) are not intercepted. A server without interceptors pays
/// nothing for the feature.
public protocol RPCServerInterceptor: Sendable {
    /// Handles one call: answer it, or pass it on with `next`.
    ///
    /// - Parameters:
    ///   - context: the call's context; pass a changed copy to `next` to change what later
    ///     interceptors and the handler see.
    ///   - next: the rest of the chain, ending in the handler. It returns the encoded
    ///     MessagePack result and throws what the handler (or a later interceptor) threw.
    /// - Returns: the encoded result: exactly one MessagePack value.
    /// - Throws: an ``RPCError`` to answer with its status; any other error answers with
    ///   status 2 (unknown).
    func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8]

    /// A connection closed: forget anything kept for it. Runs on a loop thread, so it
    /// must be quick. The default does nothing.
    func connectionClosed(_ connection: RPCConnectionID)
}

extension RPCServerInterceptor {
    /// Does nothing.
    public func connectionClosed(_ connection: RPCConnectionID) {}
}

/// The rest of a server interceptor chain: the next interceptor, or the handler itself.
public typealias RPCServerInterceptorNext = @Sendable (RPCContext) async throws -> [UInt8]

enum ServerInterceptorChain {
    /// `handler` run as a task behind `interceptors`, the first outermost.
    static func wrap(_ handler: RegisteredHandler, in interceptors: [any RPCServerInterceptor]) -> RegisteredHandler {
        let prepare = handler.asTask
        return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .async { params in
            let job = try prepare(params)
            return { context in try await run(interceptors[...], context, job) }
        })
    }

    private static func run(_ rest: ArraySlice<any RPCServerInterceptor>, _ context: RPCContext,
                            _ job: @escaping RPCServerInterceptorNext) async throws -> [UInt8] {
        guard let first = rest.first else { return try await job(context) }
        let tail = rest.dropFirst()
        return try await first.intercept(context) { context in try await run(tail, context, job) }
    }
}
