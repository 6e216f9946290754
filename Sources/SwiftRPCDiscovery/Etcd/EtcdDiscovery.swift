import Foundation
import Logging

/// Discovery backed by etcd: each server of a service is a key
/// `<prefix><service>/<host>:<port>` holding an ``RPCServiceInstance`` as JSON, attached to
/// the server's lease (see ``EtcdRegistration``). A server that stops renewing its lease
/// drops out within the lease's TTL; one that registers is seen at once (a watch).
///
/// ```swift
/// let etcd = EtcdClient(endpoint: "http://127.0.0.1:2379")
/// let cluster = try await RPCClusterClient(service: "Bench", discovery: EtcdDiscovery(client: etcd))
/// ```
public struct EtcdDiscovery: RPCDiscovery {
    /// The key prefix every service lives under.
    public static let defaultPrefix = "swiftrpc/services/"

    /// The etcd client (not shut down by the discovery).
    public let client: EtcdClient
    /// The key prefix.
    public let prefix: String
    /// Wait before re-reading after the registry could not be reached.
    public var retryDelay: Duration = .milliseconds(500)
    /// Where watch failures are reported.
    public var logger = Logger(label: "SwiftRPC.discovery.etcd")

    /// Discovery through `client`, with keys under `prefix`.
    public init(client: EtcdClient, prefix: String = EtcdDiscovery.defaultPrefix) {
        self.client = client
        self.prefix = prefix
    }

    /// The key prefix of one service's servers.
    public static func servicePrefix(_ service: String, prefix: String = defaultPrefix) -> String {
        prefix + service + "/"
    }

    /// Resolves `service` once: its servers as of now.
    public func resolve(_ service: String) async throws -> [RPCServiceInstance] {
        let (_, pairs) = try await client.range(prefix: Self.servicePrefix(service, prefix: prefix))
        return pairs.compactMap { Self.decode($0.value) }
    }

    /// The current list, then the whole list after every change. A read that fails before
    /// the first list throws; later failures (etcd restarting, the watch's revision
    /// compacted) are retried after ``retryDelay`` with a fresh read, so a consumer only
    /// ever sees complete lists.
    public func instances(of service: String) -> AsyncThrowingStream<[RPCServiceInstance], any Error> {
        let keyPrefix = Self.servicePrefix(service, prefix: prefix)
        let (stream, continuation) = AsyncThrowingStream.makeStream(
            of: [RPCServiceInstance].self, bufferingPolicy: .bufferingNewest(1))
        let task = Task { [client, retryDelay, logger] in
            var delivered = false
            while !Task.isCancelled {
                do {
                    let (revision, pairs) = try await client.range(prefix: keyPrefix)
                    var current: [String: RPCServiceInstance] = [:]
                    for (key, value) in pairs { current[key] = Self.decode(value) }
                    continuation.yield(Self.sorted(current))
                    delivered = true
                    for try await batch in client.watch(prefix: keyPrefix, fromRevision: revision + 1) {
                        for event in batch {
                            switch event.kind {
                            case .put: current[event.key] = Self.decode(event.value)
                            case .delete: current[event.key] = nil
                            }
                        }
                        continuation.yield(Self.sorted(current))
                    }
                } catch {
                    if Task.isCancelled { break }
                    if !delivered {
                        continuation.finish(throwing: error)
                        return
                    }
                    logger.warning("etcd watch failed; re-reading", metadata: ["service": "\(service)", "error": "\(error)"])
                    try? await Task.sleep(for: retryDelay)
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    static func decode(_ value: String) -> RPCServiceInstance? {
        try? JSONDecoder().decode(RPCServiceInstance.self, from: Data(value.utf8))
    }

    private static func sorted(_ map: [String: RPCServiceInstance]) -> [RPCServiceInstance] {
        map.keys.sorted().compactMap { map[$0] }
    }
}
