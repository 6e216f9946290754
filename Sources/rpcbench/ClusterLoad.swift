import ArgumentParser
import Foundation
import SwiftRPC
import SwiftRPCDiscovery
import Synchronization

/// `rpcbench load --service NAME`: closed-loop load on a service found through discovery
/// (etcd, or a static list), spread over its servers by an RPCClusterClient. Reports the
/// usual table plus each server's call counts, so a run shows how the selection spread the
/// calls and where they went when a server came or went mid-run.
struct ClusterLoadOptions: ParsableArguments {
    @Option(help: "Call this service through discovery instead of --target (needs --etcd or --servers).")
    var service: String?

    @Option(help: "etcd's client URL for --service, e.g. http://127.0.0.1:2379.")
    var etcd: String?

    @Option(help: "Static discovery for --service: HOST:PORT,HOST:PORT,...")
    var servers: String?

    @Option(help: "Server selection with --service: random, round-robin, weighted, hash, least-loaded.")
    var selection: SelectionName = .roundRobin

    @Option(help: "Fail mode with --service: fail-fast, failover, fail-try, backup.")
    var failMode: FailModeName = .failover

    @Option(help: "With --fail-mode backup: send the backup request after this many milliseconds.")
    var backupAfterMs: Int = 10

    @Flag(help: "Mark the calls idempotent (retried after a lost connection; eligible for backups).")
    var idempotent = false

    enum SelectionName: String, ExpressibleByArgument, CaseIterable {
        case random, roundRobin = "round-robin", weighted, hash, leastLoaded = "least-loaded"
        var selection: RPCSelection {
            switch self {
            case .random: .random
            case .roundRobin: .roundRobin
            case .weighted: .weightedRoundRobin
            case .hash: .consistentHash()
            case .leastLoaded: .leastLoaded
            }
        }
    }

    enum FailModeName: String, ExpressibleByArgument, CaseIterable {
        case failFast = "fail-fast", failover, failTry = "fail-try", backup
    }

    func failMode(backupAfter: Duration) -> RPCFailMode {
        switch failMode {
        case .failFast: .failFast
        case .failover: .failover(maxAttempts: 3)
        case .failTry: .failTry(maxAttempts: 3)
        case .backup: .backup(after: backupAfter)
        }
    }
}

/// Per-server counts, as printed and in `--json`.
struct ServerCounts: Codable, Sendable {
    var server: String
    var calls: Int
    var succeeded: Int
    var failed: Int
    var listed: Bool
}

/// Runs `workload` against `service` through discovery: `conns` connections per server,
/// `conns * depth` callers in a closed loop.
func runClusterWorkload(_ workload: Workload, options: ClusterLoadOptions,
                        interruption: Interruption = .never) async throws -> (LoadResult, [ServerCounts]) {
    let service = options.service!
    var etcdClient: EtcdClient?
    let discovery: any RPCDiscovery
    if let etcd = options.etcd {
        let client = EtcdClient(endpoint: etcd)
        etcdClient = client
        discovery = EtcdDiscovery(client: client)
    } else {
        discovery = StaticDiscovery([service: (options.servers ?? "").split(separator: ",").map(String.init)])
    }
    let cluster = try await RPCClusterClient(service: service, discovery: discovery, configuration: .init(
        selection: options.selection.selection,
        failMode: options.failMode(backupAfter: .milliseconds(options.backupAfterMs)),
        connectionsPerServer: workload.conns,
        idempotentMethods: options.idempotent ? [workload.method] : []))
    guard !cluster.servers.isEmpty else {
        await cluster.close()
        try? await etcdClient?.shutdown()
        throw ValidationError("no server of \(service) is listed")
    }
    let method = RPCMethod<[UInt8], [UInt8]>(workload.method)
    let payload = Payload(size: workload.payload)
    let verify = workload.method == "Bench.Echo"
    let clock = RunClock()
    let callers = workload.conns * workload.depth

    let tally: Tally = await withTaskGroup(of: Tally.self) { group in
        for caller in 0..<callers {
            group.addTask {
                var tally = Tally()
                var seq = UInt64(caller) << 40
                var request = payload.template
                // With --selection hash each caller is one key (one server while it is up).
                let callOptions = RPCCallOptions(hashKey: options.selection == .hash ? "caller-\(caller)" : nil)
                while true {
                    let now = clock.phase.load(ordering: .relaxed)
                    if now == 2 { break }
                    seq += 1
                    payload.stamp(seq, into: &request)
                    let start = nowNanos()
                    let result = await catchingRPC { () async throws(RPCError) in
                        try await cluster.call(method, request, options: callOptions)
                    }
                    guard now == 1 else { continue }
                    let ok = (try? result.get()) != nil
                    let mismatch = verify && ok && !payload.matches(try! result.get(), seq: seq)
                    tally.record(latency: nowNanos() - start, ok: ok, mismatch: mismatch)
                }
                return tally
            }
        }
        group.addTask {
            let warmedUp = await interruption.wait(seconds: workload.warmup)
            clock.cpu0.store(processCPUMicros(), ordering: .relaxed)
            clock.t0.store(nowNanos(), ordering: .relaxed)
            if warmedUp {
                clock.phase.store(1, ordering: .relaxed)
                _ = await interruption.wait(seconds: workload.duration)
            }
            // Interrupted during warm-up, the window never opened: it lasted 0 s.
            clock.t1.store(warmedUp ? nowNanos() : clock.t0.load(ordering: .relaxed), ordering: .relaxed)
            clock.cpu1.store(processCPUMicros(), ordering: .relaxed)
            clock.phase.store(2, ordering: .relaxed)
            return Tally()
        }
        var total = Tally()
        for await t in group { total.merge(t) }
        return total
    }
    let seconds = Double(clock.t1.load(ordering: .relaxed) - clock.t0.load(ordering: .relaxed)) / 1e9
    let listed = Set(cluster.servers.map(\.address))
    let counts = cluster.allStatistics.map {
        ServerCounts(server: $0.instance.address, calls: $0.calls, succeeded: $0.succeeded,
                     failed: $0.failed, listed: listed.contains($0.instance.address))
    }
    await cluster.close()
    try? await etcdClient?.shutdown()
    var named = workload
    named.name = "\(service) (\(options.selection.rawValue), \(options.failMode.rawValue))"
    named.api = .async
    let cpu = clock.cpu1.load(ordering: .relaxed) - clock.cpu0.load(ordering: .relaxed)
    // One process, one backend choice: the shared loop's is every loop's.
    let backend = (try? RPCEventLoop.shared())?.backend ?? "none"
    return (LoadResult(workload: named, backend: backend, tally: tally, seconds: seconds, cpuMicros: cpu, leftInFlight: 0,
                       interrupted: interruption.receivedSignal != nil), counts)
}

/// A run's phase and measured window, shared by its callers.
final class RunClock: Sendable {
    /// 0 warm-up, 1 measuring, 2 stopping.
    let phase = Atomic<Int>(0)
    let t0 = Atomic<UInt64>(0)
    let t1 = Atomic<UInt64>(0)
    let cpu0 = Atomic<UInt64>(0)
    let cpu1 = Atomic<UInt64>(0)
}

/// The result of an async body that throws only `RPCError`.
func catchingRPC<T>(_ body: () async throws(RPCError) -> T) async -> Result<T, RPCError> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

enum ServerTable {
    static func render(_ counts: [ServerCounts]) -> String {
        let total = max(counts.map(\.calls).reduce(0, +), 1)
        var lines = ["server                  calls   share  succeeded  failed  listed"]
        for c in counts {
            lines.append(c.server.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "%8d  %5.1f%%  %9d  %6d  %@", c.calls, 100 * Double(c.calls) / Double(total),
                         c.succeeded, c.failed, c.listed ? "yes" : "no"))
        }
        return lines.joined(separator: "\n")
    }
}
