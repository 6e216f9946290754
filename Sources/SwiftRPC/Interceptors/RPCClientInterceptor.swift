/// Runs around every call a client makes: to add credentials, log, retry, or refuse.
///
/// Interceptors run in the order listed in ``RPCClient/Configuration/interceptors``, the
/// first outermost. Each passes the call on with `next` (changing its metadata or
/// timeout if it likes) and may act on the reply or error that comes back; or answers
/// itself by throwing an ``RPCError`` (the call then never reaches the server).
///
/// ```swift
/// struct Timing: RPCClientInterceptor {
///     func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
///         let start = ContinuousClock.now
///         defer { print(call.method, start.duration(to: .now)) }
///         return try await next(call)
///     }
/// }
/// ```
///
/// Interceptors see `call`, `callWithMetadata` and `go`; with any installed, `go` runs
/// the call as a task and its completion runs on that task's thread. Notifications
/// (`notify`) are not intercepted. A client without interceptors (and without a tracer)
/// pays nothing for the feature.
public protocol RPCClientInterceptor: Sendable {
    /// Handles one call: pass it on with `next`, or throw to answer it here.
    ///
    /// - Returns: the reply, normally what `next` returned.
    /// - Throws: an ``RPCError`` (any other error reaches the caller as status 2).
    func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply
}

/// The rest of a client interceptor chain: the next interceptor, or the call itself.
public typealias RPCClientInterceptorNext = @Sendable (RPCClientCall) async throws -> RPCClientReply

/// A call as client interceptors see it.
public struct RPCClientCall: Sendable {
    /// `"Service.Method"`.
    public let method: String
    /// The request metadata; change it to change what is sent.
    public var metadata: RPCMetadata
    /// The call's timeout (`nil`: the client's default).
    public var timeout: Duration?

    /// A call description (the client makes these; tests may too).
    public init(method: String, metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil) {
        self.method = method
        self.metadata = metadata
        self.timeout = timeout
    }
}

/// A reply as client interceptors see it.
public struct RPCClientReply: Sendable {
    /// The decoded reply, of the type the caller asked for. An interceptor that answers a
    /// call itself must put a value of that type here, else the call fails with status 13.
    public var value: any Sendable
    /// The response metadata.
    public var metadata: RPCMetadata

    /// A reply.
    public init(value: any Sendable, metadata: RPCMetadata = RPCMetadata()) {
        self.value = value
        self.metadata = metadata
    }
}

/// Adds fixed metadata to every call (a token, a client name); an entry the call sets
/// itself wins.
///
/// ```swift
/// let client = try await RPCClient.connect(host: h, port: p, configuration: .init(
///     interceptors: [MetadataInterceptor(["authorization": "Bearer s3cret"])]))
/// ```
public struct MetadataInterceptor: RPCClientInterceptor {
    /// What is added.
    public let metadata: RPCMetadata

    /// Adds `metadata` to every call.
    public init(_ metadata: RPCMetadata) { self.metadata = metadata }

    public func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
        var call = call
        call.metadata.entries.merge(metadata.entries) { own, _ in own }
        return try await next(call)
    }
}
