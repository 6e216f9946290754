import Foundation
import SwiftRPC
import SwiftRPCDiscovery
import Synchronization
import XCTest

/// Against a real etcd started on loopback for each test (skipped, saying why, when etcd
/// is not installed or does not start): the gateway client, registration under leases,
/// discovery with watches, and a cluster of `rpcbench serve` processes losing members
/// mid-load.
final class EtcdTests: XCTestCase {
    private var etcd: EtcdProcess?

    override func tearDown() async throws {
        await etcd?.shutdown()
        etcd = nil
    }

    private func startEtcd() async throws -> EtcdProcess {
        let process = try EtcdProcess()
        etcd = process
        try await process.ready()
        return process
    }

    func testGatewayClientKVLeasesAndWatch() async throws {
        let etcd = try await startEtcd().client
        try await etcd.put("t/a", value: "1")
        let (revision, pairs) = try await etcd.range(prefix: "t/")
        XCTAssertEqual(pairs.map(\.key), ["t/a"])
        XCTAssertEqual(pairs.map(\.value), ["1"])

        var events = etcd.watch(prefix: "t/", fromRevision: revision + 1).makeAsyncIterator()
        let lease = try await etcd.grantLease(ttl: 30)
        let ttl = try await etcd.keepAlive(lease: lease)
        XCTAssertGreaterThan(ttl, 0)
        try await etcd.put("t/b", value: "2", lease: lease)
        try await etcd.delete("t/a")
        try await etcd.revoke(lease: lease)
        var seen: [EtcdEvent] = []
        while seen.count < 3, let batch = try await events.next() { seen += batch }
        XCTAssertEqual(seen.map(\.kind), [.put, .delete, .delete])
        XCTAssertEqual(seen.map(\.key), ["t/b", "t/a", "t/b"])
        XCTAssertEqual(seen[0].value, "2")
        let revokedTTL = try await etcd.keepAlive(lease: lease)
        XCTAssertEqual(revokedTTL, 0, "a revoked lease cannot be renewed")
        do {
            try await etcd.put("t/c", value: "3", lease: lease)
            XCTFail("a revoked lease cannot hold keys")
        } catch let error as EtcdError {
            XCTAssertTrue(error.message.contains("lease not found"), error.message)
        }
    }

    func testRegistrationsAppearAndLeaveAndExpiredLeasesDropOut() async throws {
        try requireEventLoop()
        let etcd = try await startEtcd().client
        let a = try TestServer(name: "a"), b = try TestServer(name: "b")
        defer { a.stop(); b.stop() }
        let regA = try await EtcdRegistration.register(service: "Test", instance: a.instance, etcd: etcd, ttl: 2)
        let discovery = EtcdDiscovery(client: etcd)
        let resolved = try await discovery.resolve("Test")
        XCTAssertEqual(resolved, [a.instance])

        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        XCTAssertEqual(cluster.servers, [a.instance])
        // A new server is used without a restart.
        // A long TTL for b, so its quick removal below can only be the revoke's doing.
        let regB = try await EtcdRegistration.register(service: "Test", instance: b.instance, etcd: etcd, ttl: 30)
        let joined = await cluster.waitForServers { $0.count == 2 }
        XCTAssertTrue(joined)
        var names = Set<String>()
        for i in 0..<4 { names.insert(try await cluster.call(TestMethods.who, i)) }
        XCTAssertEqual(names, ["a", "b"])

        // Renewals keep a listed past its 2 s TTL.
        try await Task.sleep(for: .seconds(3))
        let renewed = try await discovery.resolve("Test")
        XCTAssertEqual(renewed.count, 2)

        // Graceful: revoking removes it at once.
        await regB.deregister()
        let left = await cluster.waitForServers(timeout: .seconds(5)) { $0 == [a.instance] }
        XCTAssertTrue(left, "a revoked lease removes the server at once")

        // A server that stops renewing (here: a lease nobody keeps alive) drops out within its TTL.
        let ghost = RPCServiceInstance(host: "127.0.0.1", port: b.port)
        let lease = try await etcd.grantLease(ttl: 2)
        try await etcd.put(EtcdDiscovery.servicePrefix("Test") + ghost.address,
                           value: String(decoding: try JSONEncoder().encode(ghost), as: UTF8.self), lease: lease)
        let appeared = await cluster.waitForServers { $0.count == 2 }
        XCTAssertTrue(appeared)
        let expired = await cluster.waitForServers(timeout: .seconds(6)) { $0 == [a.instance] }
        XCTAssertTrue(expired, "an unrenewed lease expires and its server leaves")
        await regA.deregister()
        await cluster.close()
    }

    func testDiscoveryAndRegistrationSurviveAnEtcdRestart() async throws {
        try requireEventLoop()
        let etcdProcess = try await startEtcd()
        let etcd = etcdProcess.client
        let a = try TestServer(name: "a"), b = try TestServer(name: "b")
        defer { a.stop(); b.stop() }
        let regA = try await EtcdRegistration.register(service: "Test", instance: a.instance, etcd: etcd, ttl: 3)
        let cluster = try await RPCClusterClient(service: "Test", discovery: EtcdDiscovery(client: etcd))
        XCTAssertEqual(cluster.servers, [a.instance])

        try await etcdProcess.restart() // the watch breaks; the discovery re-reads and re-watches
        XCTAssertEqual(cluster.servers, [a.instance], "the last list is kept while etcd is away")
        let regB = try await EtcdRegistration.register(service: "Test", instance: b.instance, etcd: etcd, ttl: 3)
        let joined = await cluster.waitForServers { $0.count == 2 }
        XCTAssertTrue(joined, "a server registered after the restart is found")
        // a's lease outlived the restart and is still renewed.
        try await Task.sleep(for: .seconds(4))
        let listed = try await EtcdDiscovery(client: etcd).resolve("Test")
        XCTAssertEqual(Set(listed), [a.instance, b.instance])
        await regA.deregister()
        await regB.deregister()
        await cluster.close()
    }

    /// Three `rpcbench serve --register` processes; calls spread over them; one is killed
    /// (SIGKILL) mid-load with non-idempotent calls, then another with idempotent ones.
    /// Calls move to the survivors; only calls that were on the dead connection fail, each
    /// with `.unavailable` and not marked never-sent; idempotent ones all succeed.
    func testKillingServersMidLoadMovesCallsToTheOthers() async throws {
        try requireEventLoop()
        guard let rpcbench = rpcbenchBinary() else {
            throw XCTSkip("rpcbench is not built next to the tests (run `swift build` first)")
        }
        let etcdProcess = try await startEtcd()
        let children = try (0..<3).map { _ in
            try ServeProcess(binary: rpcbench, arguments: ["--register", "Bench", "--etcd", etcdProcess.endpoint, "--ttl", "2"])
        }
        defer { children.forEach { $0.terminate() } }
        let cluster = try await RPCClusterClient(
            service: "Bench", discovery: EtcdDiscovery(client: etcdProcess.client),
            configuration: .init(selection: .roundRobin, failMode: .failover(maxAttempts: 3),
                                 retryBudget: .unlimited))
        let all = await cluster.waitForServers { $0.count == 3 }
        XCTAssertTrue(all, "the three servers registered themselves")

        let concurrency = 16
        func load(idempotent: Bool, killing victim: ServeProcess) async -> (ok: Int, failures: [RPCError]) {
            let progress = LoadProgress()
            return await withTaskGroup(of: (Int, [RPCError]).self) { group in
                for worker in 0..<concurrency {
                    group.addTask {
                        var ok = 0
                        var failures: [RPCError] = []
                        let payload = [UInt8](repeating: UInt8(worker), count: 32)
                        while !progress.stop.load(ordering: .relaxed) {
                            do throws(RPCError) {
                                let reply = try await cluster.call(TestMethods.echo, payload, options: .init(idempotent: idempotent))
                                precondition(reply == payload)
                                ok += 1
                                progress.completed.add(1, ordering: .relaxed)
                            } catch {
                                failures.append(error)
                            }
                        }
                        return (ok, failures)
                    }
                }
                group.addTask {
                    // Kill once calls are flowing, then keep the load on for a while.
                    // (Deadlines so a broken client fails the test instead of hanging it.)
                    let limit = ContinuousClock.now + .seconds(60)
                    while progress.completed.load(ordering: .relaxed) < 2_000, ContinuousClock.now < limit {
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                    victim.kill()
                    let before = progress.completed.load(ordering: .relaxed)
                    while progress.completed.load(ordering: .relaxed) < before + 3_000, ContinuousClock.now < limit {
                        try? await Task.sleep(for: .milliseconds(5))
                    }
                    progress.stop.store(true, ordering: .relaxed)
                    return (0, [])
                }
                var ok = 0
                var failures: [RPCError] = []
                for await (n, f) in group { ok += n; failures += f }
                return (ok, failures)
            }
        }

        // Non-idempotent calls: those in flight on the dead connection fail, clearly.
        let victim1 = children[0], port1 = children[0].port
        let phase1 = await load(idempotent: false, killing: victim1)
        XCTAssertGreaterThanOrEqual(phase1.ok, 5_000, "the load went on after the kill")
        // Every failure is a call sent on the dead server's connection (in flight when it
        // died, or sent before the client saw the connection close); none on the others.
        let afterPhase1 = cluster.allStatistics
        // (Attempts refused before sending were retried, so the victim may count more.)
        XCTAssertLessThanOrEqual(phase1.failures.count, afterPhase1.first { $0.instance.port == port1 }?.failed ?? 0)
        XCTAssertEqual(afterPhase1.filter { $0.instance.port != port1 }.map(\.failed).reduce(0, +), 0)
        for failure in phase1.failures {
            XCTAssertEqual(failure.code, .unavailable, "\(failure)")
            XCTAssertFalse(failure.requestNeverSent, "a never-sent call would have been retried: \(failure)")
        }
        let dropped = await cluster.waitForServers(timeout: .seconds(8)) { !$0.contains { $0.port == port1 } && $0.count == 2 }
        XCTAssertTrue(dropped, "the dead server's lease expired and discovery dropped it")

        let victim1Calls = cluster.allStatistics.first { $0.instance.port == port1 }?.calls

        // Idempotent calls: the ones on the dead connection are retried elsewhere.
        let victim2 = children[1], port2 = children[1].port
        let beforeSurvivor = cluster.statistics.first { $0.instance.port == children[2].port }?.succeeded ?? 0
        let phase2 = await load(idempotent: true, killing: victim2)
        XCTAssertGreaterThanOrEqual(phase2.ok, 5_000, "the load went on after the kill")
        XCTAssertEqual(phase2.failures.count, 0, "idempotent calls all succeed: \(phase2.failures.prefix(3))")
        let stats = cluster.allStatistics
        let deadCalls = stats.filter { $0.instance.port == port1 || $0.instance.port == port2 }
        let survivor = stats.first { $0.instance.port == children[2].port }!
        XCTAssertGreaterThan(survivor.succeeded - beforeSurvivor, 3_000 / 2, "after the kill the survivor carries the load")
        for dead in deadCalls { XCTAssertGreaterThan(dead.succeeded, 0, "each victim served calls before it died") }
        XCTAssertEqual(stats.first { $0.instance.port == port1 }?.calls, victim1Calls, "no call goes to a dropped server")
        print("per-server calls:", stats.map { "\($0.instance.address)=\($0.calls) ok=\($0.succeeded) failed=\($0.failed)" },
              "phase1 failures:", phase1.failures.count)
        await cluster.close()
    }
}

/// Shared by a load's workers and its killer.
final class LoadProgress: Sendable {
    let stop = Atomic<Bool>(false)
    let completed = Atomic<Int>(0)
}
