import CoreMetrics
import Synchronization

/// One method's swift-metrics objects, made when the server starts so that recording a
/// call is a few calls into the backend's handlers and takes no lock here.
///
/// Labels (with the default prefix `rpc`), each with the dimension `method`:
/// `rpc_server_calls_total`, `rpc_server_errors_total` (also `code`),
/// `rpc_server_in_flight` (a meter) and `rpc_server_duration` (a timer, nanoseconds).
final class MethodMetrics: Sendable {
    private let calls: Counter
    private let inFlight: Meter
    private let duration: Timer
    /// Error counters by status code, made on first use of each code (lock-free).
    private let errors: InlineArray<18, AtomicLazyReference<Counter>>
    private let method: String
    private let prefix: String
    private let factory: any MetricsFactory

    init(method: String, prefix: String, factory: any MetricsFactory) {
        let dims = [("method", method)]
        self.method = method
        self.prefix = prefix
        self.factory = factory
        calls = Counter(label: "\(prefix)_server_calls_total", dimensions: dims, factory: factory)
        inFlight = Meter(label: "\(prefix)_server_in_flight", dimensions: dims, factory: factory)
        duration = Timer(label: "\(prefix)_server_duration", dimensions: dims, factory: factory)
        errors = InlineArray { _ in AtomicLazyReference<Counter>() }
    }

    /// A call starts; returns when, for ``end(_:error:)``.
    @inline(__always)
    func begin() -> ContinuousClock.Instant {
        calls.increment()
        inFlight.increment()
        return ContinuousClock.now
    }

    /// The call that began at `started` ended, failed with `error` or not.
    func end(_ started: ContinuousClock.Instant, error: RPCError.Code?) {
        let elapsed = started.duration(to: .now)
        duration.recordNanoseconds(elapsed.components.seconds &* 1_000_000_000
            &+ elapsed.components.attoseconds / 1_000_000_000)
        inFlight.decrement()
        if let error { errorCounter(error).increment() }
    }

    /// A call that failed before it could start (its params did not decode).
    func rejected(_ code: RPCError.Code) {
        calls.increment()
        errorCounter(code).increment()
    }

    private func errorCounter(_ code: RPCError.Code) -> Counter {
        let slot = (0..<17).contains(code.rawValue) ? code.rawValue : 17
        if let counter = errors[slot].load() { return counter }
        let made = Counter(label: "\(prefix)_server_errors_total",
                           dimensions: [("method", method), ("code", slot == 17 ? "other" : String(slot))],
                           factory: factory)
        return errors[slot].storeIfNil(made)
    }
}
