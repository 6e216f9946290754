import Logging
import SwiftRPC

/// Turns discovery lists into server snapshots: connects to servers that appear (retrying
/// those that refuse while they stay listed), drops those that disappear, and publishes a
/// new ``ServerSnapshot`` after each change. Changes are serialized by `state`'s lock;
/// connecting happens outside it.
final class Membership: Sendable {
    private struct State {
        var wanted: [String: RPCServiceInstance] = [:]
        var live: [String: ServerEndpoint] = [:]
        var connecting: Set<String> = []
        var retired: [ServerEndpoint] = []
        var closed = false
    }

    private let service: String
    private let configuration: RPCClusterClient.Configuration
    private let cell: SnapshotCell<ServerSnapshot>
    private let state = Locked(State())
    /// Tasks running in the background (reconnects, drains), by id, so close() can end
    /// them; each removes itself when done (`finished` covers one done before it was added).
    private struct Background {
        var tasks: [Int: Task<Void, Never>] = [:]
        var finished: Set<Int> = []
        var nextID = 0
    }
    private let background = Locked(Background())

    init(service: String, configuration: RPCClusterClient.Configuration, cell: SnapshotCell<ServerSnapshot>) {
        self.service = service
        self.configuration = configuration
        self.cell = cell
    }

    /// Applies one full list; returns after each new server has been tried once.
    func apply(_ list: [RPCServiceInstance]) async {
        var wanted: [String: RPCServiceInstance] = [:]
        for instance in list { wanted[instance.address] = instance }
        let (dropped, toConnect) = state.withLock { s -> ([ServerEndpoint], [RPCServiceInstance]) in
            guard !s.closed else { return ([], []) }
            s.wanted = wanted
            var dropped: [ServerEndpoint] = []
            for (address, endpoint) in s.live where wanted[address] != endpoint.instance {
                // Gone, or changed (weight, metadata): re-made with the new instance.
                dropped.append(endpoint)
                s.live[address] = nil
            }
            s.retired.append(contentsOf: dropped)
            if s.retired.count > 256 { s.retired.removeFirst(s.retired.count - 256) } // bounded history
            let toConnect = wanted.values.filter { s.live[$0.address] == nil && !s.connecting.contains($0.address) }
            for instance in toConnect { s.connecting.insert(instance.address) }
            if !dropped.isEmpty { publish(s) }
            return (dropped, toConnect)
        }
        for endpoint in dropped {
            configuration.logger.info("server left", metadata: ["service": "\(service)", "address": "\(endpoint.instance.address)"])
            spawn { [configuration] in await endpoint.drainAndClose(grace: configuration.drainTimeout) }
        }
        await withTaskGroup(of: Void.self) { group in
            for instance in toConnect {
                group.addTask { await self.connectFirst(instance) }
            }
        }
    }

    /// One attempt now; on failure, keep trying in the background while the address stays
    /// listed (with whatever instance is listed there by then: its weight may change).
    private func connectFirst(_ instance: RPCServiceInstance) async {
        if await tryConnect(instance) { return }
        let address = instance.address
        spawn { [self] in
            while true {
                try? await Task.sleep(for: configuration.connectRetryDelay)
                guard !Task.isCancelled, let current = wantedOrRelease(address) else { return }
                if await tryConnect(current) { return }
            }
        }
    }

    /// The instance listed at `address` now; nil, and no longer marked as connecting,
    /// when there is none.
    private func wantedOrRelease(_ address: String) -> RPCServiceInstance? {
        state.withLock { s in
            if !s.closed, let wanted = s.wanted[address] { return wanted }
            s.connecting.remove(address)
            return nil
        }
    }

    /// Connects and publishes; true when done with this address (connected, or no longer
    /// listed), false to try again (refused, or listed with other settings meanwhile).
    private func tryConnect(_ instance: RPCServiceInstance) async -> Bool {
        let address = instance.address
        let endpoint: ServerEndpoint
        do {
            endpoint = try await ServerEndpoint.connect(
                instance, count: configuration.connectionsPerServer, configuration: configuration.connection)
        } catch {
            configuration.logger.warning("cannot connect", metadata: [
                "service": "\(service)", "address": "\(address)", "error": "\(error)"])
            return false
        }
        enum Outcome { case kept, unlisted, changed }
        let outcome = state.withLock { s -> Outcome in
            guard !s.closed, let wanted = s.wanted[address] else {
                s.connecting.remove(address)
                return .unlisted
            }
            guard wanted == instance else { return .changed }
            s.connecting.remove(address)
            s.live[address] = endpoint
            publish(s)
            return .kept
        }
        switch outcome {
        case .kept:
            configuration.logger.info("server joined", metadata: ["service": "\(service)", "address": "\(address)"])
            return true
        case .unlisted:
            endpoint.connections.forEach { $0.close() }
            return true
        case .changed:
            endpoint.connections.forEach { $0.close() }
            return false
        }
    }

    /// Builds and swaps in the snapshot of `s.live`. Called with the lock held, so
    /// snapshots are published in the order of the changes.
    private func publish(_ s: State) {
        cell.store(ServerSnapshot(endpoints: Array(s.live.values), selection: configuration.selection))
    }

    private func spawn(_ body: @escaping @Sendable () async -> Void) {
        let id = background.withLock { b in defer { b.nextID += 1 }; return b.nextID }
        let task = Task { [self] in
            await body()
            background.withLock { b in
                if b.tasks.removeValue(forKey: id) == nil { b.finished.insert(id) }
            }
        }
        background.withLock { b in
            if b.finished.remove(id) == nil { b.tasks[id] = task }
        }
    }

    func everCalled() -> [RPCServerStatistics] {
        state.withLock { s in (s.live.values.map(\.statistics) + s.retired.map(\.statistics)) }
            .sorted { $0.instance.address < $1.instance.address }
    }

    func closeAll() async {
        let (endpoints, tasks) = state.withLock { s -> ([ServerEndpoint], [Task<Void, Never>]) in
            s.closed = true
            let all = Array(s.live.values)
            s.live = [:]
            s.wanted = [:]
            publish(s)
            return (all, background.withLock { Array($0.tasks.values) })
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        for endpoint in endpoints { endpoint.connections.forEach { $0.close() } }
    }
}
