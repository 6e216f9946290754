import SwiftRPC

/// Streams through a cluster: each opens on one server the selection picks. Before any
/// element has flowed the fail mode applies as for a call (a stream refused by a draining
/// server, a server that is gone, are retried on another where the mode and the budget allow
/// it); once one has, a failure is the stream's and is never retried. The `backup` mode runs
/// streams as `failover` with two attempts: a stream's elements cannot be sent twice.
extension RPCClusterClient {
    /// Opens a server stream on a server of the cluster. The attempt lasts until the first
    /// element (or the end) arrives: a stream that fails before it is retried per the fail
    /// mode; after it, the iteration throws the failure.
    public func serverStream<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>, _ args: Args, options: RPCCallOptions = RPCCallOptions(),
        window: RPCStreamWindow? = nil
    ) async throws(RPCError) -> RPCServerStreamCall<Element> {
        try await run(method.name, options, hedged: false) { client, options throws(RPCError) in
            let stream = try await client.serverStream(method, args, options: Self.open(options, window))
            if let failure = await stream.failureBeforeFirstElement() { throw failure }
            return stream
        }
    }

    /// Runs a client stream on a server of the cluster (see ``RPCClient/clientStream(_:_:options:_:)``).
    /// `body` runs again, on another server, only when the attempt failed before any
    /// element flowed.
    public func clientStream<Args, Element, Reply>(
        _ method: RPCClientStreamMethod<Args, Element, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions(),
        window: RPCStreamWindow? = nil, _ body: @escaping @Sendable (RPCStreamWriter<Element>) async throws -> Void
    ) async throws(RPCError) -> Reply {
        try await StreamAttempt.watching { attempt throws(RPCError) in
            try await run(method.name, options, hedged: false) { client, options throws(RPCError) in
                try await client.clientStream(method, args, options: Self.open(options, window)) { writer in
                    attempt.follow(writer)
                    try await body(writer)
                }
            }
        }
    }

    /// Runs a bidirectional stream on a server of the cluster (see
    /// ``RPCClient/bidiStream(_:_:options:_:)``); retried as ``clientStream(_:_:options:window:_:)`` is.
    public func bidiStream<Args, ClientElement, ServerElement, Result: Sendable>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>, _ args: Args,
        options: RPCCallOptions = RPCCallOptions(), window: RPCStreamWindow? = nil,
        _ body: @escaping @Sendable (RPCStreamWriter<ClientElement>, RPCStreamInbound<ServerElement>) async throws -> Result
    ) async throws(RPCError) -> Result {
        try await StreamAttempt.watching { attempt throws(RPCError) in
            try await run(method.name, options, hedged: false) { client, options throws(RPCError) in
                try await client.bidiStream(method, args, options: Self.open(options, window)) { writer, inbound in
                    attempt.follow(writer)
                    return try await body(writer, inbound)
                }
            }
        }
    }

    private static func open(_ options: RPCCallOptions, _ window: RPCStreamWindow?) -> RPCStreamOptions {
        RPCStreamOptions(timeout: options.timeout, metadata: options.metadata, window: window)
    }
}

/// Whether the stream of the attempt under way has moved an element, for the fail modes'
/// retry check (`mayRetry`), which reads it through the task-local `current`.
final class StreamAttempt: @unchecked Sendable {
    @TaskLocal static var current: StreamAttempt?

    private let writer = Locked<(@Sendable () -> Bool)?>(nil)

    /// Whether the latest attempt's stream moved an element.
    var flowed: Bool { writer.withLock { $0 }?() ?? false }

    /// The attempt now under way writes with `stream`.
    func follow<Element>(_ stream: RPCStreamWriter<Element>) {
        writer.withLock { $0 = { stream.hasFlowed } }
    }

    /// Runs `body` with a fresh attempt as `current`.
    static func watching<R: Sendable>(_ body: (StreamAttempt) async throws(RPCError) -> R) async throws(RPCError) -> R {
        let attempt = StreamAttempt()
        let outcome: Result<R, RPCError> = await $current.withValue(attempt) {
            do throws(RPCError) { return .success(try await body(attempt)) } catch { return .failure(error) }
        }
        return try outcome.get()
    }
}
