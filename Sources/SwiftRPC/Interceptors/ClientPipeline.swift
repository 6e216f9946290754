import Tracing

/// A client's interceptors, tracing first when a tracer is set. Exists only when there is
/// something to run: a client without it takes the direct path.
@usableFromInline
final class ClientPipeline: Sendable {
    private let interceptors: [any RPCClientInterceptor]

    /// Nil when there is nothing to run around calls.
    static func make(_ configured: [any RPCClientInterceptor], tracer: (any Tracer)?) -> ClientPipeline? {
        var all = configured
        if let tracer { all.insert(ClientTracing.interceptor(tracer), at: 0) }
        return all.isEmpty ? nil : ClientPipeline(all)
    }

    private init(_ interceptors: [any RPCClientInterceptor]) { self.interceptors = interceptors }

    /// Runs the chain around `terminal` (which makes the call on the wire).
    func run(_ call: RPCClientCall, _ terminal: @escaping RPCClientInterceptorNext) async throws(RPCError) -> RPCClientReply {
        do {
            return try await Self.run(interceptors[...], call, terminal)
        } catch let error as RPCError {
            throw error
        } catch is CancellationError {
            throw RPCError(.cancelled, "the call was cancelled")
        } catch {
            throw RPCError(.unknown, String(describing: error))
        }
    }

    private static func run(_ rest: ArraySlice<any RPCClientInterceptor>, _ call: RPCClientCall,
                            _ terminal: @escaping RPCClientInterceptorNext) async throws -> RPCClientReply {
        guard let first = rest.first else { return try await terminal(call) }
        let tail = rest.dropFirst()
        return try await first.intercept(call) { call in try await run(tail, call, terminal) }
    }
}

/// The client half of tracing: a `client` span per call, its context injected into the
/// request metadata.
enum ClientTracing {
    static func interceptor(_ tracer: any Tracer) -> any RPCClientInterceptor { make(tracer) }

    // Generic, so the interceptor calls the concrete tracer (the existential is opened once).
    private static func make<T: Tracer>(_ tracer: T) -> any RPCClientInterceptor { Interceptor(tracer: tracer) }

    private struct Interceptor<T: Tracer>: RPCClientInterceptor {
        let tracer: T

        func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
            try await tracer.withSpan(call.method, ofKind: .client) { span in
                span.attributes["rpc.system"] = "swiftrpc"
                span.attributes["rpc.method"] = call.method
                var call = call
                tracer.inject(span.context, into: &call.metadata, using: RPCMetadataInjector())
                do { return try await next(call) } catch let error as RPCError {
                    span.attributes["rpc.status_code"] = error.code.rawValue
                    throw error
                }
            }
        }
    }
}
