/// Resolves a service name to its live servers and reports every change.
///
/// Implementations: ``StaticDiscovery`` (a fixed or hand-updated list, no registry) and
/// ``EtcdDiscovery`` (servers registered in etcd under leases). ``RPCClusterClient``
/// consumes either through this one protocol.
public protocol RPCDiscovery: Sendable {
    /// The servers of `service`: the first element is the current list, each later one
    /// the whole list after a change. The stream ends when the discovery is shut down or
    /// the consuming task is cancelled; it throws when the registry cannot be read at all.
    func instances(of service: String) -> AsyncThrowingStream<[RPCServiceInstance], any Error>
}
