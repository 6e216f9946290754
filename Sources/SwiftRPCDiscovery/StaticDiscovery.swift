import SwiftRPC

/// Discovery without a registry: a list of addresses per service, which the program may
/// replace at run time (every watcher then sees the new list).
///
/// ```swift
/// let discovery = StaticDiscovery(["Bench": ["127.0.0.1:7000", "127.0.0.1:7001"]])
/// let cluster = try await RPCClusterClient(service: "Bench", discovery: discovery)
/// ```
public final class StaticDiscovery: RPCDiscovery {
    private struct State {
        var lists: [String: [RPCServiceInstance]]
        var watchers: [Int: (service: String, continuation: AsyncThrowingStream<[RPCServiceInstance], any Error>.Continuation)] = [:]
        var nextWatcher = 0
    }

    private let state: Locked<State>

    /// Discovery over `lists`: service name to instances.
    public init(_ lists: [String: [RPCServiceInstance]]) {
        state = Locked(State(lists: lists))
    }

    /// Discovery over `lists`: service name to `HOST:PORT` strings (malformed ones are
    /// dropped).
    public convenience init(_ lists: [String: [String]]) {
        self.init(lists.mapValues { $0.compactMap { RPCServiceInstance(address: $0) } })
    }

    /// Replaces the list of `service`; watchers get the new list.
    public func update(_ service: String, to instances: [RPCServiceInstance]) {
        let targets = state.withLock { state in
            state.lists[service] = instances
            return state.watchers.values.filter { $0.service == service }.map(\.continuation)
        }
        for target in targets { target.yield(instances) }
    }

    /// The list of `service` (empty when unknown), then each list given to
    /// ``update(_:to:)``. Never throws; ends when the consumer stops.
    public func instances(of service: String) -> AsyncThrowingStream<[RPCServiceInstance], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: [RPCServiceInstance].self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            let id = state.nextWatcher
            state.nextWatcher += 1
            state.watchers[id] = (service, continuation)
            continuation.yield(state.lists[service] ?? [])
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }
}
