import ArgumentParser
import Foundation
import RPCExamples
import SwiftRPC
import SwiftRPCDiscovery

/// `rpcbench serve`: the reference services until SIGINT or SIGTERM.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the reference services (Bench.Echo, Arith.*, rpc.*) until SIGINT/SIGTERM.",
        discussion: """
            Prints "listening on HOST:PORT" (or "listening on unix:PATH") as its first line as \
            soon as it accepts connections, then "I/O backend: io_uring" (or epoll).

            Examples:
              rpcbench serve                             # 127.0.0.1, a free port
              rpcbench serve --host 0.0.0.0 --port 7000 --loops 2 --cpu 0
              rpcbench serve --host :: --port 7000       # IPv6 and IPv4
              rpcbench serve --unix /run/bench.sock      # a Unix socket instead of TCP
              rpcbench serve --tls-cert server.pem --tls-key server.key --tls-client-ca ca.pem   # mutual TLS
              rpcbench serve --register Bench --etcd http://127.0.0.1:2379   # discoverable

            With --register the server puts itself in etcd under a lease it renews, before
            printing "listening on"; SIGINT/SIGTERM revokes the lease (the entry vanishes at
            once), while a crash leaves it to expire after --ttl seconds.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port = 0

    @Option(help: "Listen on this Unix socket path (or @name, abstract) instead of TCP.")
    var unix: String?

    @Option(help: "With --unix: the socket file's mode, octal (e.g. 660).")
    var unixMode: String?

    @OptionGroup(title: "TLS") var tls: ServerTLSOptions

    @Option(help: "Event-loop threads; 0 means one per CPU.")
    var loops = 0

    @Option(help: "Pin loop i to CPU (cpu + i); -1 leaves threads unpinned.")
    var cpu = -1

    @Option(help: "Largest frame accepted or sent, in bytes.")
    var maxFrameSize = 4 << 20

    @Option(help: "Seconds a client that half-closed (or closed) may still have its calls and notifications run.")
    var drainTimeout = 10.0

    @Option(help: "Register in etcd as a server of this service (needs --etcd).")
    var register: String?

    @Option(help: "etcd's client URL for --register, e.g. http://127.0.0.1:2379.")
    var etcd: String?

    @Option(help: "Lease TTL in seconds for --register: how long a crashed server stays listed.")
    var ttl = 5

    @Option(help: "Address registered with --register (default: --host, or 127.0.0.1 when --host is 0.0.0.0).")
    var advertise: String?

    @Flag(inversion: .prefixedNo, help: "Keep per-method call and error counts for rpc.stats (rpcbench stats).")
    var methodStats = true

    @Flag(help: "Fault injection for testing rpcbench itself: Bench.Echo flips one byte of every reply.")
    var corruptEcho = false

    func validate() throws {
        if drainTimeout <= 0 { throw ValidationError("--drain-timeout must be positive") }
        if (register == nil) != (etcd == nil) { throw ValidationError("--register and --etcd go together") }
        if ttl < 2 { throw ValidationError("--ttl must be at least 2") }
        if let unixMode, Int(unixMode, radix: 8) == nil { throw ValidationError("--unix-mode is octal, e.g. 660") }
        if unixMode != nil && unix == nil { throw ValidationError("--unix-mode goes with --unix") }
        if unix != nil && register != nil { throw ValidationError("--register needs a TCP address, not --unix") }
    }

    func run() async throws {
        let signals = Signals.trapTermination()
        let listenHost = unix.map { "unix:\($0)" } ?? host
        var configuration = RPCServer.Configuration(
            host: listenHost, port: port, loops: loops, firstCPU: cpu >= 0 ? cpu : nil, maxFrameSize: maxFrameSize,
            tls: tls.configuration)
        configuration.unixSocketMode = unixMode.flatMap { Int($0, radix: 8) }
        configuration.methodStatistics = methodStats
        configuration.drainTimeout = .milliseconds(Int64(max(drainTimeout, 0.001) * 1000))
        let server = RPCServer(configuration: configuration)
        if corruptEcho {
            try server.register(ArithService())
            try server.registerRawInline("Bench.Echo") { request in
                guard let range = request.argument(0) else { throw RPCError(.invalidArgument, "one argument") }
                var bytes = Array(request.params[range])
                bytes[bytes.count - 1] ^= 0x5a // the last payload byte (a bin's header stays valid)
                return .bytes(bytes)
            }
        } else {
            try registerReferenceServices(on: server)
        }
        let bound = try server.start()
        let hangUp = reloadTLSOnHangUp(server, tls)
        var registration: EtcdRegistration?
        var etcdClient: EtcdClient?
        if let register, let etcd {
            let client = EtcdClient(endpoint: etcd)
            etcdClient = client
            let address = advertise ?? (host == "0.0.0.0" ? "127.0.0.1" : host)
            registration = try await EtcdRegistration.register(
                service: register, instance: RPCServiceInstance(host: address, port: bound), etcd: client, ttl: ttl)
        }
        // Unbuffered, so a parent reading the pipe sees it at once.
        let listening = unix != nil ? listenHost : RPCAddress(host: host, port: bound).description
        var lines = "listening on \(listening)\nI/O backend: \(server.backend ?? "none")\n"
        if let limits = server.limits {
            let raised = limits.descriptorLimitBefore != limits.descriptorLimit
                ? " (raised from \(limits.descriptorLimitBefore))" : ""
            lines += "descriptors: limit \(limits.descriptorLimit)\(raised), reserve \(limits.descriptorReserve), "
                + "max connections \(limits.maxConnections)\n"
        }
        FileHandle.standardOutput.write(Data(lines.utf8))
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { signals.wait(); done.resume() }
        }
        // Out of discovery first, so clients stop sending before the server goes.
        await registration?.deregister()
        try? await etcdClient?.shutdown()
        hangUp?.cancel()
        server.stop()
    }
}
