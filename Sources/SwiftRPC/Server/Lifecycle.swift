import Logging
import ServiceLifecycle

/// `RPCServer` runs as a swift-service-lifecycle `Service`: it starts (if not started yet),
/// serves until graceful shutdown is triggered (SIGTERM through a `ServiceGroup`, say), then
/// drains as ``RPCServer/shutdown(drainTimeout:)`` does.
///
/// ```swift
/// let server = RPCServer(configuration: .init(port: 7000))
/// try server.register(ArithService())
/// let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm],
///                          logger: Logger(label: "app"))
/// try await group.run()
/// ```
extension RPCServer: Service {
    public func run() async throws {
        if port == nil { try start() }
        // Returns on graceful shutdown; throws if the task is cancelled. Either way, drain.
        try? await gracefulShutdown()
        await shutdown(drainTimeout: configuration.drainTimeout)
    }
}

/// `RPCClient` runs as a `Service` too: it keeps its connection until graceful shutdown,
/// then closes it (pending calls end with `.unavailable`).
extension RPCClient: Service {
    public func run() async throws {
        try? await gracefulShutdown()
        close()
    }
}
