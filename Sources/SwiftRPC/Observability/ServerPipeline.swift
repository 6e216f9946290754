import CoreMetrics
import Tracing

/// Builds the router a server runs with: each handler wrapped once, at start, in what the
/// configuration asks for (statistics, metrics, a span, interceptors). What is not asked
/// for is not wrapped, so a server with none of it runs the handlers as registered.
///
/// Layers, outermost first: statistics and metrics (they see every outcome, interceptor
/// refusals included), the server span (it covers the interceptors), the interceptors,
/// the handler.
enum ServerPipeline {
    static func build(_ router: Router, configuration: RPCServer.Configuration, loops: Int) -> Router {
        var router = router
        let interceptors = configuration.interceptors
        if !interceptors.isEmpty {
            router.mapHandlers { ServerInterceptorChain.wrap($0, in: interceptors) }
            router.connectionObservers = interceptors
        }
        if let tracer = configuration.tracing.resolve() {
            router.mapHandlers { ServerTracing.wrap($0, tracer: tracer) }
        }
        let names = Array(router.handlers.keys) + Array(router.streamHandlers.keys)
        let statistics = configuration.methodStatistics ? MethodStatistics(methods: names, loops: loops) : nil
        router.statistics = statistics
        let factory = configuration.metrics.resolve()
        if statistics != nil || factory != nil {
            let prefix = configuration.metrics.labelPrefix
            router.mapHandlers { handler in
                CallRecording.wrap(handler, counters: statistics?.counters(handler.name),
                                   metrics: factory.map { MethodMetrics(method: handler.name, prefix: prefix, factory: $0) })
            }
        }
        return router
    }
}

/// Counts and times calls around a handler.
enum CallRecording {
    static func wrap(_ handler: RegisteredHandler, counters: MethodCounters?, metrics: MethodMetrics?) -> RegisteredHandler {
        switch handler.body {
        case .inline(let run) where metrics == nil:
            // Statistics alone (the default): the least work an inline call can do to be counted.
            guard let counters else { return handler }
            return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .inline { params, context, writer in
                counters.inlineCall(loop: context.connection.loop)
                do { return try run(params, context, writer) } catch {
                    counters.error(RPCError(handlerError: error).code)
                    throw error
                }
            }, asTask: handler.asTask)
        case .inline(let run):
            return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .inline { params, context, writer in
                counters?.inlineCall(loop: context.connection.loop)
                let started = metrics?.begin()
                do {
                    let echoed = try run(params, context, writer)
                    if let started { metrics?.end(started, error: nil) }
                    return echoed
                } catch {
                    let code = RPCError(handlerError: error).code
                    counters?.error(code)
                    if let started { metrics?.end(started, error: code) }
                    throw error
                }
            }, asTask: handler.asTask)
        case .async(let prepare):
            return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .async { params in
                counters?.taskCall()
                let job: @Sendable (RPCContext) async throws -> [UInt8]
                do { job = try prepare(params) } catch {
                    let code = RPCError(handlerError: error).code
                    counters?.error(code)
                    metrics?.rejected(code)
                    throw error
                }
                let started = metrics?.begin()
                return { context in
                    do {
                        let reply = try await job(context)
                        if let started { metrics?.end(started, error: nil) }
                        return reply
                    } catch {
                        // As the server answers: a non-RPC error out of a cancelled task is 1.
                        let code = Task.isCancelled && !(error is RPCError)
                            ? RPCError.Code.cancelled : RPCError(handlerError: error).code
                        counters?.error(code)
                        if let started { metrics?.end(started, error: code) }
                        throw error
                    }
                }
            })
        }
    }
}

/// A `server` span around each call, continuing the trace the caller sent in metadata.
enum ServerTracing {
    static func wrap(_ handler: RegisteredHandler, tracer: any Tracer) -> RegisteredHandler {
        wrap(handler, opened: tracer)
    }

    // Generic, so the closures call the concrete tracer (the existential is opened once).
    private static func wrap<T: Tracer>(_ handler: RegisteredHandler, opened tracer: T) -> RegisteredHandler {
        switch handler.body {
        case .inline(let run):
            return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .inline { params, context, writer in
                try tracer.withSpan(context.method, context: parent(tracer, context), ofKind: .server) { span in
                    annotate(span, context)
                    do { return try run(params, context, writer) } catch {
                        status(span, error)
                        throw error
                    }
                }
            }, asTask: handler.asTask)
        case .async(let prepare):
            return RegisteredHandler(name: handler.name, decodesParams: handler.decodesParams, body: .async { params in
                let job = try prepare(params)
                return { context in
                    try await tracer.withSpan(context.method, context: parent(tracer, context), ofKind: .server) { span in
                        annotate(span, context)
                        do { return try await job(context) } catch {
                            status(span, error)
                            throw error
                        }
                    }
                }
            })
        }
    }

    /// The caller's trace context from the request metadata (top level when none came).
    private static func parent<T: Tracer>(_ tracer: T, _ context: RPCContext) -> ServiceContext {
        var parent = ServiceContext.topLevel
        tracer.extract(context.metadata, into: &parent, using: RPCMetadataExtractor())
        return parent
    }

    private static func annotate(_ span: some Span, _ context: RPCContext) {
        span.attributes["rpc.system"] = "swiftrpc"
        span.attributes["rpc.method"] = context.method
    }

    private static func status(_ span: some Span, _ error: any Error) {
        span.attributes["rpc.status_code"] = RPCError(handlerError: error).code.rawValue
    }
}
