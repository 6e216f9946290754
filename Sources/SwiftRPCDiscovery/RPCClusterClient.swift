import Logging
import SwiftRPC

/// Calls one service spread over many servers: resolves the service through an
/// ``RPCDiscovery``, keeps a connection pool to each live server, picks a server per call
/// (``RPCSelection``), and survives servers going away (``RPCFailMode``).
///
/// ```swift
/// let etcd = EtcdClient(endpoint: "http://127.0.0.1:2379")
/// let cluster = try await RPCClusterClient(
///     service: "Arith", discovery: EtcdDiscovery(client: etcd),
///     configuration: .init(selection: .leastLoaded, failMode: .failover(maxAttempts: 3)))
/// let product = try await cluster.call(Arith.multiply, .init(A: 7, B: 6))
/// let all = await cluster.broadcast(Arith.multiply, .init(A: 1, B: 1))  // every server
/// await cluster.close()
/// ```
///
/// Membership changes (a server registering, dying, deregistering) swap an immutable
/// snapshot of the servers; calls read it without a lock. A server that leaves discovery
/// stops getting new calls at once and its connections close when its calls in flight
/// have ended.
public final class RPCClusterClient: Sendable {
    /// Cluster settings.
    public struct Configuration: Sendable {
        /// How the server of each call is picked.
        public var selection: RPCSelection
        /// What a failed call does.
        public var failMode: RPCFailMode
        /// Bounds retries and backup requests.
        public var retryBudget: RPCRetryBudget
        /// Connections per server (calls spread over them round-robin). One connection is
        /// one event-loop ring's worth of work on the server; raise it when one caps you.
        public var connectionsPerServer: Int
        /// Settings of each connection. Reconnecting (when unset: 50 ms to 2 s backoff) and
        /// `failFast` are forced on: a down connection must fail calls at once.
        public var connection: RPCClient.Configuration
        /// Methods (wire names) that are safe to run twice: retried after a lost
        /// connection, and eligible for backup requests.
        public var idempotentMethods: Set<String>
        /// Error codes worth another attempt (default: unavailable).
        public var retryableCodes: Set<RPCError.Code>
        /// Seed of the random choices (random, leastLoaded, consistentHash without a key);
        /// nil: from the system's randomness.
        public var seed: UInt64?
        /// Wait between attempts to connect to a listed server that refuses.
        public var connectRetryDelay: Duration
        /// How long a dropped server's calls in flight may take before its pool closes.
        public var drainTimeout: Duration
        /// Where membership changes are logged.
        public var logger: Logger

        /// Settings with defaults: round-robin, failover over 3 attempts, a budget of 0.1
        /// retries per call, one connection per server.
        public init(selection: RPCSelection = .roundRobin, failMode: RPCFailMode = .failover(maxAttempts: 3),
                    retryBudget: RPCRetryBudget = RPCRetryBudget(), connectionsPerServer: Int = 1,
                    connection: RPCClient.Configuration = RPCClient.Configuration(),
                    idempotentMethods: Set<String> = [], retryableCodes: Set<RPCError.Code> = [.unavailable],
                    seed: UInt64? = nil, connectRetryDelay: Duration = .milliseconds(200),
                    drainTimeout: Duration = .seconds(5),
                    logger: Logger = Logger(label: "SwiftRPC.cluster")) {
            self.selection = selection
            self.failMode = failMode
            self.retryBudget = retryBudget
            self.connectionsPerServer = max(connectionsPerServer, 1)
            self.connection = connection
            self.idempotentMethods = idempotentMethods
            self.retryableCodes = retryableCodes
            self.seed = seed
            self.connectRetryDelay = connectRetryDelay
            self.drainTimeout = drainTimeout
            self.logger = logger
        }
    }

    /// The service called.
    public let service: String
    /// The settings.
    public let configuration: Configuration
    let selector: Selector
    /// Whether attempts are timed (only the least-loaded selection reads latencies).
    let timesAttempts: Bool
    let snapshot: SnapshotCell<ServerSnapshot>
    private let membership: Membership
    private let watcher = Locked<Task<Void, Never>?>(nil)

    /// Starts following `service` through `discovery` and returns once its first list has
    /// been read and each listed server has been tried once (those that refused are
    /// retried in the background).
    ///
    /// - Throws: the discovery's error when the first list cannot be read.
    public init(service: String, discovery: any RPCDiscovery,
                configuration: Configuration = Configuration()) async throws {
        self.service = service
        self.configuration = configuration
        self.selector = Selector(configuration.selection, seed: configuration.seed)
        self.timesAttempts = configuration.selection == .leastLoaded
        let cell = SnapshotCell(ServerSnapshot(endpoints: [], selection: configuration.selection))
        self.snapshot = cell
        let membership = Membership(service: service, configuration: configuration, cell: cell)
        self.membership = membership
        let updates = discovery.instances(of: service)
        let logger = configuration.logger
        // One task follows discovery for the client's life; init waits for its first list.
        let first: Result<Void, any Error> = await withCheckedContinuation { started in
            let task = Task {
                var waiting = true
                do {
                    for try await list in updates {
                        await membership.apply(list)
                        if waiting { waiting = false; started.resume(returning: .success(())) }
                    }
                    if waiting {
                        waiting = false
                        started.resume(returning: .failure(RPCError(.unavailable, "discovery of \(service) ended before listing any server")))
                    }
                } catch {
                    if waiting {
                        waiting = false
                        started.resume(returning: .failure(error))
                    } else {
                        logger.error("discovery failed; keeping the last list", metadata: [
                            "service": "\(service)", "error": "\(error)"])
                    }
                }
            }
            watcher.withLock { $0 = task }
        }
        if case .failure(let error) = first {
            await close()
            throw error
        }
    }

    /// The servers calls can go to now.
    public var servers: [RPCServiceInstance] { snapshot.load().endpoints.map(\.instance) }

    /// Per-server counters, for the servers currently listed.
    public var statistics: [RPCServerStatistics] { snapshot.load().endpoints.map(\.statistics) }

    /// Per-server counters of the servers listed now and of those that left (the last 256).
    public var allStatistics: [RPCServerStatistics] { membership.everCalled() }

    /// Stops following discovery and closes every connection (calls in flight end with
    /// `.unavailable`). Idempotent. Call it when done: until then the task following
    /// discovery keeps the connections open, even if the client is no longer referenced.
    public func close() async {
        let task = watcher.withLock { t -> Task<Void, Never>? in defer { t = nil }; return t }
        task?.cancel()
        await task?.value
        await membership.closeAll()
    }

    /// Waits (polling every 10 ms, up to `timeout`) until `condition` holds for the
    /// current server list; true when it did. For tests and start-up.
    public func waitForServers(timeout: Duration = .seconds(10),
                               _ condition: ([RPCServiceInstance]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if condition(servers) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(servers)
    }
}
