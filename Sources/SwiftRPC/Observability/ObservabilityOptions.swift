import CoreMetrics
import Tracing

/// Whether a server or client records metrics through swift-metrics.
///
/// ```swift
/// MetricsSystem.bootstrap(myPrometheusFactory)       // once, at startup
/// let server = RPCServer()                           // .automatic: records to it
/// let quiet = RPCServer(configuration: .init(metrics: .off))
/// ```
///
/// Metric objects are made once, when the server starts (per method) or the client
/// connects; recording a call then takes no lock in SwiftRPC (the backend's handlers may
/// take their own). With `.off`, or `.automatic` and no backend bootstrapped, nothing is
/// recorded and calls pay nothing.
public struct RPCMetricsOptions: Sendable {
    enum Mode: Sendable {
        case off
        case automatic
        case factory(any MetricsFactory)
    }

    let mode: Mode
    /// Prepended to every metric's label (`rpc_server_calls_total` with the default `rpc`).
    public var labelPrefix: String = "rpc"
    /// How often server- and client-wide gauges (connections, pending calls) and the
    /// counters the core keeps (timeouts, late replies) are read and recorded.
    public var pollInterval: Duration = .seconds(5)

    /// Records nothing.
    public static let off = RPCMetricsOptions(mode: .off)
    /// Records to the factory bootstrapped with `MetricsSystem.bootstrap`, if there is one
    /// when the server starts (or the client connects); else nothing.
    public static let automatic = RPCMetricsOptions(mode: .automatic)
    /// Records to `factory`, whatever is bootstrapped (tests pass a test factory).
    public static func factory(_ factory: any MetricsFactory) -> RPCMetricsOptions {
        RPCMetricsOptions(mode: .factory(factory))
    }

    /// The factory to record to, or nil when metrics are off.
    func resolve() -> (any MetricsFactory)? {
        switch mode {
        case .off: return nil
        case .factory(let f): return f
        case .automatic:
            let f = MetricsSystem.factory
            return f is NOOPMetricsHandler ? nil : f
        }
    }
}

/// Whether a server or client makes a span per call through swift-distributed-tracing.
///
/// With a tracer, the client starts a `client` span per call (a child of the caller's
/// `ServiceContext.current`) and injects its context into the request metadata (W3C
/// `traceparent` with an OpenTelemetry tracer: the keys are the tracer's); the server
/// extracts it and runs the handler inside a `server` span, with `ServiceContext.current`
/// set, so the handler's own spans join the trace.
public struct RPCTracingOptions: Sendable {
    enum Mode: Sendable {
        case off
        case automatic
        case tracer(any Tracer)
    }

    let mode: Mode

    /// No spans.
    public static let off = RPCTracingOptions(mode: .off)
    /// Uses the tracer bootstrapped with `InstrumentationSystem.bootstrap`, if there is
    /// one when the server starts (or the client connects); else no spans, at no cost.
    public static let automatic = RPCTracingOptions(mode: .automatic)
    /// Uses `tracer`, whatever is bootstrapped.
    public static func tracer(_ tracer: any Tracer) -> RPCTracingOptions {
        RPCTracingOptions(mode: .tracer(tracer))
    }

    /// The tracer to use, or nil when tracing is off. Checked once, not per call.
    func resolve() -> (any Tracer)? {
        switch mode {
        case .off: return nil
        case .tracer(let t): return t
        case .automatic:
            let t = InstrumentationSystem.tracer
            return t is NoOpTracer ? nil : t
        }
    }
}

/// Reads trace context out of request metadata (server side).
struct RPCMetadataExtractor: Extractor {
    func extract(key: String, from carrier: RPCMetadata) -> String? { carrier[key] }
}

/// Writes trace context into request metadata (client side).
struct RPCMetadataInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout RPCMetadata) {
        carrier[key] = value
    }
}
