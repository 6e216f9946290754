import CoreMetrics

/// Records what the core counts anyway every poll interval instead of on every frame:
/// connections open and requests delivered but not yet answered (gauges), and frames and
/// bytes in and out, rejected frames and TLS handshakes done and refused (counters,
/// incremented by what changed).
///
/// Labels (default prefix `rpc`): `rpc_server_connections`, `rpc_server_requests_in_flight`,
/// `rpc_server_frames_in_total`, `rpc_server_frames_out_total`, `rpc_server_bytes_in_total`,
/// `rpc_server_bytes_out_total`, `rpc_server_rejected_frames_total`,
/// `rpc_server_tls_handshakes_total`, `rpc_server_rejected_handshakes_total`.
enum ServerMetricsPoller {
    static func start(_ core: ServerCore, factory: any MetricsFactory, options: RPCMetricsOptions) -> Task<Void, Never> {
        let connections = Gauge(label: "\(options.labelPrefix)_server_connections", factory: factory)
        let inFlight = Gauge(label: "\(options.labelPrefix)_server_requests_in_flight", factory: factory)
        func counter(_ name: String) -> Counter { Counter(label: "\(options.labelPrefix)_server_\(name)_total", factory: factory) }
        let framesIn = counter("frames_in"), framesOut = counter("frames_out")
        let bytesIn = counter("bytes_in"), bytesOut = counter("bytes_out"), rejected = counter("rejected_frames")
        let handshakes = counter("tls_handshakes"), refusedHandshakes = counter("rejected_handshakes")
        let interval = options.pollInterval
        // Weak: the poller must not keep a stopped server's core alive.
        return Task.detached { [weak core] in
            var last = RPCServerStatistics()
            while !Task.isCancelled {
                guard let core else { return }
                let now = core.statistics
                connections.record(now.connections)
                inFlight.record(now.requestsInFlight)
                func add(_ counter: Counter, _ value: KeyPath<RPCServerStatistics, Int>) {
                    if now[keyPath: value] > last[keyPath: value] { counter.increment(by: Int64(now[keyPath: value] - last[keyPath: value])) }
                }
                add(framesIn, \.framesIn)
                add(framesOut, \.framesOut)
                add(bytesIn, \.bytesIn)
                add(bytesOut, \.bytesOut)
                add(rejected, \.rejectedFrames)
                add(handshakes, \.tlsHandshakes)
                add(refusedHandshakes, \.rejectedHandshakes)
                last = now
                try? await Task.sleep(for: interval)
            }
        }
    }
}
