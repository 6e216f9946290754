import CoreMetrics

/// Records a server's gauges, which the core keeps anyway, every poll interval instead of
/// on every frame: connections open and requests delivered but not yet answered.
///
/// Labels (default prefix `rpc`): `rpc_server_connections`, `rpc_server_requests_in_flight`.
enum ServerMetricsPoller {
    static func start(_ core: ServerCore, factory: any MetricsFactory, options: RPCMetricsOptions) -> Task<Void, Never> {
        let connections = Gauge(label: "\(options.labelPrefix)_server_connections", factory: factory)
        let inFlight = Gauge(label: "\(options.labelPrefix)_server_requests_in_flight", factory: factory)
        let interval = options.pollInterval
        // Weak: the poller must not keep a stopped server's core alive.
        return Task.detached { [weak core] in
            while !Task.isCancelled {
                guard let core else { return }
                connections.record(core.connectionCount)
                inFlight.record(core.inflightCount)
                try? await Task.sleep(for: interval)
            }
        }
    }
}
