import CoreMetrics

/// Records a client's counters, which the core keeps anyway, every poll interval instead
/// of on every call: calls themselves pay nothing for client metrics.
///
/// Labels (default prefix `rpc`): `rpc_client_pending_calls` (gauge),
/// `rpc_client_timeouts_total`, `rpc_client_late_replies_total` and
/// `rpc_client_reconnects_total` (counters).
enum ClientMetricsPoller {
    static func start(_ handle: ClientHandle, factory: any MetricsFactory, options: RPCMetricsOptions) -> Task<Void, Never> {
        let prefix = options.labelPrefix
        let interval = options.pollInterval
        let pending = Gauge(label: "\(prefix)_client_pending_calls", factory: factory)
        let timeouts = Counter(label: "\(prefix)_client_timeouts_total", factory: factory)
        let late = Counter(label: "\(prefix)_client_late_replies_total", factory: factory)
        let reconnects = Counter(label: "\(prefix)_client_reconnects_total", factory: factory)
        // Weak: the poller must not keep a dropped client alive; it ends when the handle goes.
        return Task.detached { [weak handle] in
            var last = RPCClientStatistics(pending: 0, lateReplies: 0, timeouts: 0)
            while !Task.isCancelled {
                guard let now = handle?.statistics else { return }
                pending.record(Int64(now.pending))
                if now.timeouts > last.timeouts { timeouts.increment(by: Int64(now.timeouts - last.timeouts)) }
                if now.lateReplies > last.lateReplies {
                    late.increment(by: Int64(now.lateReplies - last.lateReplies))
                }
                if now.reconnects > last.reconnects {
                    reconnects.increment(by: Int64(now.reconnects - last.reconnects))
                }
                last = now
                try? await Task.sleep(for: interval)
            }
        }
    }
}
