import ArgumentParser
import Foundation
import SwiftRPC

/// Options shared by `load` and the suite.
struct LoadOptions: ParsableArguments {
    @Option(help: "Measured seconds per workload.")
    var duration: Double = 5

    @Option(help: "Warm-up seconds before measuring.")
    var warmup: Double = 1

    @Option(help: "Pin the client (its event loop and every thread) to this CPU; -1 leaves it unpinned.")
    var cpu: Int = -1

    @Flag(help: "Print results as JSON instead of a table.")
    var json = false
}

/// `rpcbench load`: drive one workload against a running server.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Drive load against a running server and report throughput and latency.",
        discussion: """
            Closed loop by default: each connection keeps --depth calls in flight. With --rate \
            the run is open loop: calls are sent at fixed intended times and latency is measured \
            from each call's intended send time (no coordinated omission). Every Bench.Echo reply \
            is compared with its request; errors and mismatches (during warm-up too) and calls \
            still unanswered 10 s after the run make the exit status 1. Ctrl-C (or SIGTERM) \
            ends the run early: what was measured so far is printed, marked as interrupted, \
            and the status is the signal's (130 for Ctrl-C); a second one quits at once.

            Examples:
              rpcbench load --target 127.0.0.1:7000                       # W2 shape, callback API
              rpcbench load --target 127.0.0.1:7000 --conns 1 --depth 1   # W1 shape
              rpcbench load --target 127.0.0.1:7000 --depth 4 --payload 65536 --conns 1
              rpcbench load --target 127.0.0.1:7000 --rate 100000 --api async --json
              rpcbench load --service Bench --etcd http://127.0.0.1:2379 --conns 2 --depth 16
              rpcbench load --service Bench --servers 127.0.0.1:7000,127.0.0.1:7001 --selection least-loaded

            With --service the calls go through discovery (servers registered by `rpcbench \
            serve --register`, or a --servers list) and an RPCClusterClient: --conns \
            connections per server, conns x depth callers in a closed loop (async API), \
            each server's call counts printed after the table.
            """
    )

    @Option(help: "Server address: HOST:PORT, [V6]:PORT, unix:PATH or unix:@NAME (or use --service).")
    var target: String?

    @OptionGroup(title: "TLS") var tls: ClientTLSOptions

    @Option(help: "Connections.")
    var conns = 4

    @Option(help: "Calls in flight per connection (closed loop).")
    var depth = 32

    @Option(help: "Payload bytes per call (0 up to the max frame size, 4 MiB, less the envelope).")
    var payload = 32

    @Option(help: "Method to call; replies are verified for Bench.Echo.")
    var method = "Bench.Echo"

    @Option(help: "Client API: callback (go), async (await call on the global executor) or async-loop (await call from tasks on the client's event loop).")
    var api: Workload.API = .callback

    @Option(help: "Open loop at this many calls per second (all connections together).")
    var rate: Double?

    @Option(help: "Instead of calls, one stream of --payload-byte elements: server (Bench.Stream, W4), client (Bench.Upload, W5) or bidi (Bench.EchoStream).")
    var stream: StreamWorkload.Kind?

    @Option(help: "With --stream server: the consumer waits this many microseconds per element (W6: memory must stay flat).")
    var consumerDelayUs: Int?

    @Option(help: "With --stream: the server's pid, to sample its resident memory too.")
    var serverPid: Int32?

    @Option(help: "With --stream server or bidi: the window the client grants, MESSAGES,BYTES (default: the client's, 16,65536).")
    var window: String?

    @OptionGroup var options: LoadOptions

    @OptionGroup(title: "Discovery") var cluster: ClusterLoadOptions

    func validate() throws {
        if cluster.service != nil {
            guard target == nil else { throw ValidationError("--target and --service exclude each other") }
            guard (cluster.etcd == nil) != (cluster.servers == nil) else {
                throw ValidationError("--service needs exactly one of --etcd and --servers")
            }
            guard rate == nil else { throw ValidationError("--rate is not supported with --service") }
            guard stream == nil else { throw ValidationError("--stream is not supported with --service") }
        } else {
            guard let target, Endpoint(target) != nil else {
                throw ValidationError("--target must be HOST:PORT, [V6]:PORT or unix:PATH")
            }
        }
        guard conns > 0, depth > 0, payload >= 0 else { throw ValidationError("--conns and --depth must be positive, --payload not negative") }
        let largest = Workload.largestPayload(method: method)
        guard payload <= largest else {
            throw ValidationError("--payload is at most \(largest) bytes for \(method): a request holds the payload "
                                  + "and its envelope in one frame of at most \(RPCClient.Configuration().maxFrameSize) bytes")
        }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
    }

    func run() async throws {
        if let stream {
            var workload = StreamWorkload(name: "stream", kind: stream, payload: payload)
            workload.duration = options.duration
            workload.warmup = options.warmup
            workload.consumerDelay = consumerDelayUs.map { .microseconds($0) }
            if let window {
                let parts = window.split(separator: ",").compactMap { Int($0) }
                guard parts.count == 2 else { throw ValidationError("--window is MESSAGES,BYTES") }
                workload.window = RPCStreamWindow(messages: parts[0], bytes: parts[1])
            }
            var endpoint = Endpoint(target!)!
            endpoint.tls = tls.configuration
            let result = try await runStreamWorkload(workload, endpoint: endpoint, cpu: options.cpu, serverPID: serverPid)
            print(options.json ? jsonArray([result]) : StreamTable.render([result]))
            if result.failed { throw ExitCode(1) }
            return
        }
        var workload = Workload(name: "load", conns: conns, depth: depth, payload: payload)
        workload.method = method
        workload.api = api
        workload.duration = options.duration
        workload.warmup = options.warmup
        workload.rate = rate
        let interruption = Interruption.catchingTermination()
        let result: LoadResult
        if cluster.service != nil {
            let counts: [ServerCounts]
            (result, counts) = try await runClusterWorkload(workload, options: cluster, interruption: interruption)
            report(result, interruption) {
                if options.json {
                    print("{\"results\": \(Table.json([result])),\n\"servers\": \(jsonArray(counts))}")
                } else {
                    print(Table.render([result]))
                    print()
                    print(ServerTable.render(counts))
                }
            }
        } else {
            var endpoint = Endpoint(target!)!
            endpoint.tls = tls.configuration
            result = try await runWorkload(workload, endpoint: endpoint, cpu: options.cpu,
                                           interruption: interruption)
            report(result, interruption) { print(options.json ? Table.json([result]) : Table.render([result])) }
        }
        if result.failed { throw ExitCode(1) }
    }

    /// Prints the result; after a signal, says how much ran, then dies of the signal.
    private func report(_ result: LoadResult, _ interruption: Interruption, print printResult: () -> Void) {
        if result.interrupted && result.seconds == 0 {
            writeStderr("interrupted during warm-up: nothing was measured\n")
        } else {
            printResult()
            if result.interrupted && !options.json {
                print(String(format: "interrupted: measured %.1f s of the %.1f s asked for", result.seconds, options.duration))
            }
        }
        interruption.endProcessIfInterrupted()
    }
}

extension Workload.API: ExpressibleByArgument {}

/// A --target: HOST:PORT, [V6]:PORT, unix:/path or unix:@name (RPCAddress).
struct Endpoint: Sendable {
    var host: String
    var port: Int
    /// TLS to the server; nil: plaintext.
    var tls: RPCTLSConfiguration?

    init?(_ text: String) {
        guard let address = RPCAddress(text) else { return nil }
        host = address.host
        port = address.port
    }

    /// HOST:PORT, [V6]:PORT or unix:PATH.
    var address: String { RPCAddress(host: host, port: port).description }
}

/// Connects, runs one workload, closes.
func runWorkload(_ workload: Workload, endpoint: Endpoint, cpu: Int,
                 interruption: Interruption = .never) async throws -> LoadResult {
    if cpu >= 0 { try RPCEventLoop.pinProcess(toCPU: cpu) }
    let loop = try RPCEventLoop(cpu: cpu >= 0 ? cpu : nil)
    var clients: [RPCClient] = []
    for _ in 0..<workload.conns {
        clients.append(try await RPCClient.connect(
            host: endpoint.host, port: endpoint.port, configuration: .init(eventLoop: loop, tls: endpoint.tls)))
    }
    let result = await LoadEngine(workload: workload, clients: clients).run(interruption: interruption)
    clients.forEach { $0.close() }
    return result
}

func jsonArray<T: Encodable>(_ values: [T]) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: (try? encoder.encode(values)) ?? Data("[]".utf8), as: UTF8.self)
}
