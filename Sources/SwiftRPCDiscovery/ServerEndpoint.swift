import SwiftRPC
import Synchronization

/// One server of a cluster: its connection pool and the counters selection and
/// statistics read. Created once connected; closed when discovery drops the server.
///
/// The pool is fixed at creation. Each connection reconnects on its own (with backoff)
/// and fails calls at once while down (`failFast`), so a call to a server that just died
/// fails without its request leaving the process (``SwiftRPC/RPCError/requestNeverSent``)
/// and can go elsewhere.
final class ServerEndpoint: Sendable {
    let instance: RPCServiceInstance
    let connections: [RPCClient]
    private let nextConnection = Atomic<UInt64>(0)
    private let inFlightCount = Atomic<Int>(0)
    private let latency = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    /// Calls sent on each connection of the pool.
    let perConnection: [Counter]

    init(instance: RPCServiceInstance, connections: [RPCClient]) {
        self.instance = instance
        self.connections = connections
        self.perConnection = connections.map { _ in Counter() }
    }

    /// Connects `count` connections to `instance` (in parallel). Throws the first failure,
    /// having closed the connections that did open.
    static func connect(_ instance: RPCServiceInstance, count: Int,
                        configuration: RPCClient.Configuration) async throws(RPCError) -> ServerEndpoint {
        var forced = configuration
        if forced.reconnect == nil { forced.reconnect = ReconnectBackoff(initial: .milliseconds(50), maximum: .seconds(2)) }
        forced.failFast = true
        let config = forced
        let results = await withTaskGroup(of: Result<RPCClient, RPCError>.self) { group in
            for _ in 0..<max(count, 1) {
                group.addTask {
                    await catching { () async throws(RPCError) in
                        try await RPCClient.connect(host: instance.host, port: instance.port, configuration: config)
                    }
                }
            }
            var all: [Result<RPCClient, RPCError>] = []
            for await r in group { all.append(r) }
            return all
        }
        let clients = results.compactMap { try? $0.get() }
        for case .failure(let error) in results {
            clients.forEach { $0.close() }
            throw error
        }
        return ServerEndpoint(instance: instance, connections: clients)
    }

    /// True while at least one connection is up.
    var isAvailable: Bool { connections.contains { $0.isConnected } }

    /// The pool's next live connection, round-robin; nil when all are down.
    func connection() -> (RPCClient, Int)? {
        let n = connections.count
        if n == 1 { return connections[0].isConnected ? (connections[0], 0) : nil }
        let start = Int(nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue % UInt64(n))
        for step in 0..<n {
            let i = (start + step) % n
            if connections[i].isConnected { return (connections[i], i) }
        }
        return nil
    }

    /// Calls in flight through this cluster client.
    var inFlight: Int { inFlightCount.load(ordering: .relaxed) }

    /// Smoothed latency of successful calls, in nanoseconds (0 until one succeeds).
    var latencyNanos: Int { latency.load(ordering: .relaxed) }

    /// Moves the in-flight count (also how tests stage a loaded server).
    func adjustInFlight(_ delta: Int) { inFlightCount.add(delta, ordering: .relaxed) }

    func began(connection: Int) {
        adjustInFlight(1)
        perConnection[connection].increment()
    }

    /// Records an ended call (`nanos` 0: not timed). Successes are not counted apart:
    /// they are the calls sent less those failed or in flight. The moving average (1/8
    /// weight to the new sample) is a load-then-store: a racing update may be lost, which
    /// only makes it a little less smooth.
    func ended(success: Bool, nanos: Int) {
        adjustInFlight(-1)
        if !success {
            failed.add(1, ordering: .relaxed)
        } else if nanos > 0 {
            let old = latency.load(ordering: .relaxed)
            latency.store(old == 0 ? nanos : old + (nanos - old) / 8, ordering: .relaxed)
        }
    }

    /// Closes the pool once no call of this client is in flight on it, or after `grace`.
    func drainAndClose(grace: Duration) async {
        let deadline = ContinuousClock.now + grace
        while inFlight > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(10))
        }
        connections.forEach { $0.close() }
    }

    var statistics: RPCServerStatistics {
        // Read in-flight and failures before the sends, so successes never come out negative.
        let inFlight = self.inFlight, failed = failed.load(ordering: .relaxed)
        let perConnection = perConnection.map(\.value)
        let calls = perConnection.reduce(0, +)
        return RPCServerStatistics(instance: instance, calls: calls, succeeded: max(calls - failed - inFlight, 0),
                                   failed: failed, inFlight: inFlight, connected: connections.filter(\.isConnected).count,
                                   callsPerConnection: perConnection)
    }
}

/// What one server of a cluster has seen from this client.
public struct RPCServerStatistics: Sendable, Hashable {
    /// The server.
    public var instance: RPCServiceInstance
    /// Calls sent to it (attempts: a retried call counts once per server tried).
    public var calls: Int
    /// Of those, calls that succeeded.
    public var succeeded: Int
    /// Of those, calls that failed (including cancelled backup requests).
    public var failed: Int
    /// Calls in flight now.
    public var inFlight: Int
    /// Connections of its pool that are up.
    public var connected: Int
    /// Calls sent on each connection of its pool.
    public var callsPerConnection: [Int]
}

/// An atomic counter that can live in an array.
final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// The result of an async body that throws only `RPCError`.
func catching<T>(_ body: () async throws(RPCError) -> T) async -> Result<T, RPCError> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
