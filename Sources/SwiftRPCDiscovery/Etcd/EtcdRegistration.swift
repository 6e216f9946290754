import Foundation
import Logging
import SwiftRPC

/// A server's entry in etcd, kept alive under a lease.
///
/// Registering grants a lease of `ttl` seconds, puts `<prefix><service>/<host>:<port>`
/// under it and renews it every `ttl / 3`. If a renewal finds the lease expired (etcd was
/// unreachable for longer than the TTL) a new lease is granted and the key put again.
/// ``deregister()`` (graceful shutdown) stops renewing and revokes the lease, so clients
/// drop the server at once; a server that dies without it drops out within `ttl`.
///
/// ```swift
/// let port = try server.start()
/// let registration = try await EtcdRegistration.register(
///     service: "Bench", instance: .init(host: "10.0.0.7", port: port), etcd: etcd)
/// // ... serve ...
/// await registration.deregister()
/// server.stop()
/// ```
public final class EtcdRegistration: Sendable {
    /// The service registered.
    public let service: String
    /// The instance registered.
    public let instance: RPCServiceInstance
    /// The key holding the instance.
    public let key: String

    private let etcd: EtcdClient
    private let ttl: Int
    private let value: String
    private let lease: Locked<Int64>
    private let keeper = Locked<Task<Void, Never>?>(nil)
    private let logger: Logger

    private init(service: String, instance: RPCServiceInstance, key: String, value: String,
                 etcd: EtcdClient, ttl: Int, lease: Int64, logger: Logger) {
        self.service = service
        self.instance = instance
        self.key = key
        self.value = value
        self.etcd = etcd
        self.ttl = ttl
        self.lease = Locked(lease)
        self.logger = logger
    }

    /// Registers `instance` as a server of `service` and starts keeping it alive.
    ///
    /// - Parameter ttl: the lease's time to live in seconds (at least 2): how long a dead
    ///   server can stay listed.
    /// - Throws: ``EtcdError`` or a transport error when etcd cannot be reached.
    public static func register(service: String, instance: RPCServiceInstance, etcd: EtcdClient,
                                ttl: Int = 5, prefix: String = EtcdDiscovery.defaultPrefix,
                                logger: Logger = Logger(label: "SwiftRPC.registration.etcd")) async throws -> EtcdRegistration {
        let ttl = max(ttl, 2)
        let key = EtcdDiscovery.servicePrefix(service, prefix: prefix) + instance.address
        let value = String(decoding: try JSONEncoder().encode(instance), as: UTF8.self)
        let lease = try await etcd.grantLease(ttl: ttl)
        try await etcd.put(key, value: value, lease: lease)
        let registration = EtcdRegistration(service: service, instance: instance, key: key, value: value,
                                            etcd: etcd, ttl: ttl, lease: lease, logger: logger)
        registration.keeper.withLock { $0 = Task { await registration.keepAlive() } }
        logger.info("registered", metadata: ["key": "\(key)", "lease": "\(lease)", "ttl": "\(ttl)"])
        return registration
    }

    /// The lease currently holding the key.
    public var leaseID: Int64 { lease.withLock { $0 } }

    private func keepAlive() async {
        let interval = Duration.milliseconds(ttl * 1000 / 3)
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { return }
            do {
                let current = leaseID
                if try await etcd.keepAlive(lease: current) > 0 { continue }
                // Expired while etcd was out of reach: the key is gone. Put it back.
                let fresh = try await etcd.grantLease(ttl: ttl)
                try await etcd.put(key, value: value, lease: fresh)
                lease.withLock { $0 = fresh }
                logger.warning("lease had expired; registered again", metadata: ["key": "\(key)", "lease": "\(fresh)"])
            } catch {
                logger.warning("lease renewal failed", metadata: ["key": "\(key)", "error": "\(error)"])
            }
        }
    }

    /// Stops renewing and revokes the lease, removing the key at once. Idempotent; a
    /// failure to reach etcd is logged (the key then expires within the TTL).
    public func deregister() async {
        guard let task = keeper.withLock({ t -> Task<Void, Never>? in defer { t = nil }; return t }) else { return }
        task.cancel()
        await task.value
        do {
            try await etcd.revoke(lease: leaseID)
            logger.info("deregistered", metadata: ["key": "\(key)"])
        } catch {
            logger.warning("revoke failed; the key expires with its lease", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }
}
