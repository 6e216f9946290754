import SwiftRPC
import SwiftRPCDiscovery
import XCTest

/// RPCClusterClient over a static list of in-process servers: selection, fail modes,
/// the retry budget, backup requests, broadcast and fork, pooling, membership changes.
final class ClusterStaticTests: XCTestCase {
    private var servers: [TestServer] = []

    override func tearDown() {
        servers.forEach { $0.stop() }
        servers = []
    }

    private func start(_ specs: [(String, Int, Int, Bool)]) throws -> StaticDiscovery {
        try requireEventLoop()
        servers = try specs.map { try TestServer(name: $0.0, slowMillis: $0.1, failFirst: $0.2, extra: $0.3) }
        return StaticDiscovery(["Test": servers.map(\.instance)])
    }

    private func start(_ names: [String]) throws -> StaticDiscovery {
        try start(names.map { ($0, 0, 0, false) })
    }

    private func tally(_ names: [String]) -> [String: Int] {
        names.reduce(into: [:]) { $0[$1, default: 0] += 1 }
    }

    /// A stream that fails before any element flows is retried per the fail mode; one that
    /// fails after is not (its body ran once).
    func testStreamsRetryOnlyBeforeAnElementFlowed() async throws {
        let discovery = try start(["refuses", "b"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                 configuration: .init(failMode: .failover(maxAttempts: 2)))
        for _ in 0..<4 { // round robin: every other first pick is the refusing server
            var names: [String] = []
            for try await name in try await cluster.serverStream(TestMethods.names, 3, options: .init(idempotent: true)) {
                names.append(name)
            }
            XCTAssertEqual(names, ["b", "b", "b"])
        }
        let bodies = Locked(0)
        do {
            _ = try await cluster.clientStream(TestMethods.breaks, RPCNoArguments(), options: .init(idempotent: true)) { writer in
                bodies.withLock { $0 += 1 }
                try await writer.write(1)
                try await Task.sleep(for: .milliseconds(200)) // the server fails meanwhile
                try await writer.write(2)
            }
            XCTFail("the stream should fail")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
        }
        XCTAssertEqual(bodies.withLock { $0 }, 1, "a stream that moved an element is not retried")
        await cluster.close()
    }

    func testRoundRobinSpreadsCallsEvenly() async throws {
        let discovery = try start(["a", "b", "c"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        XCTAssertEqual(cluster.servers.count, 3)
        var names: [String] = []
        for i in 0..<30 { names.append(try await cluster.call(TestMethods.who, i)) }
        XCTAssertEqual(tally(names), ["a": 10, "b": 10, "c": 10])
        XCTAssertEqual(cluster.statistics.map(\.calls), [10, 10, 10])
        await cluster.close()
    }

    func testWeightsAndHashKeysReachTheServers() async throws {
        try requireEventLoop()
        servers = [try TestServer(name: "heavy"), try TestServer(name: "light")]
        var heavy = servers[0].instance
        heavy.weight = 3
        let discovery = StaticDiscovery(["Test": [heavy, servers[1].instance]])
        let weighted = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                  configuration: .init(selection: .weightedRoundRobin))
        var names: [String] = []
        for i in 0..<40 { names.append(try await weighted.call(TestMethods.who, i)) }
        XCTAssertEqual(tally(names), ["heavy": 30, "light": 10])
        await weighted.close()

        let hashed = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                configuration: .init(selection: .consistentHash()))
        for user in 0..<10 {
            var seen = Set<String>()
            for _ in 0..<5 { seen.insert(try await hashed.call(TestMethods.who, 0, options: .init(hashKey: "user-\(user)"))) }
            XCTAssertEqual(seen.count, 1, "one key, one server")
        }
        await hashed.close()
    }

    func testFailTryRetriesTheSameServerForIdempotentCalls() async throws {
        let discovery = try start([("a", 0, 2, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .failTry(maxAttempts: 3), retryBudget: .unlimited))
        let name = try await cluster.call(TestMethods.flaky, 0, options: .init(idempotent: true))
        XCTAssertEqual(name, "a")
        XCTAssertEqual(cluster.statistics[0].calls, 3) // two failures, then the success
        await cluster.close()
    }

    func testNonIdempotentCallsAreNotRetriedOnceSent() async throws {
        let discovery = try start([("a", 0, 100, false), ("b", 0, 100, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .failover(maxAttempts: 3), retryBudget: .unlimited))
        do {
            _ = try await cluster.call(TestMethods.flaky, 0)
            XCTFail("expected the server's error")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertFalse(error.requestNeverSent)
        }
        XCTAssertEqual(cluster.statistics.map(\.calls).reduce(0, +), 1, "a sent, non-idempotent call is not repeated")
        await cluster.close()
    }

    func testFailoverMovesIdempotentCallsAndTheBudgetCapsRetries() async throws {
        // Both servers always fail: 10 idempotent calls with failover over 5 attempts would
        // be 50 attempts; a budget of 2 tokens (no refill) allows 10 + 2.
        let discovery = try start([("a", 0, 1000, false), ("b", 0, 1000, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .failover(maxAttempts: 5), retryBudget: RPCRetryBudget(ratio: 0, maximum: 2)))
        var failures = 0
        for i in 0..<10 {
            do { _ = try await cluster.call(TestMethods.flaky, i, options: .init(idempotent: true)) } catch { failures += 1 }
        }
        XCTAssertEqual(failures, 10)
        XCTAssertEqual(cluster.statistics.map(\.calls).reduce(0, +), 12)
        await cluster.close()

        // With budget, a failing server's call moves to the other one.
        servers.forEach { $0.stop() }
        let discovery2 = try start([("bad", 0, 1000, false), ("good", 0, 0, false)])
        let failover = try await RPCClusterClient(service: "Test", discovery: discovery2, configuration: .init(
            failMode: .failover(maxAttempts: 2), retryBudget: .unlimited))
        for i in 0..<6 {
            let name = try await failover.call(TestMethods.flaky, i, options: .init(idempotent: true))
            XCTAssertEqual(name, "good")
        }
        await failover.close()
    }

    func testBackupRequestAnswersFromTheSecondServerAndCancelsTheFirst() async throws {
        let discovery = try start([("slow", 5_000, 0, false), ("fast", 0, 0, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .backup(after: .milliseconds(50)), retryBudget: .unlimited))
        for _ in 0..<4 {
            let name = try await cluster.call(TestMethods.slow, 0, options: .init(idempotent: true))
            XCTAssertEqual(name, "fast")
        }
        let stats = Dictionary(uniqueKeysWithValues: cluster.statistics.map { ($0.instance.port, $0) })
        let slow = stats[servers[0].port]!, fast = stats[servers[1].port]!
        XCTAssertGreaterThanOrEqual(slow.calls, 1) // round-robin: some calls started there
        XCTAssertEqual(slow.failed, slow.calls)    // ... and were cancelled when the backup won
        XCTAssertEqual(fast.succeeded, 4)
        // The losers' handlers were cancelled on the server too.
        let slowServer = servers[0].server
        let drained = await eventually { slowServer.runningHandlerCount == 0 }
        XCTAssertTrue(drained)
        await cluster.close()
    }

    func testTheBudgetCapsBackupRequests() async throws {
        // Two tokens, no refill. Each call's handlers wait at their server's gate, so the
        // primary never answers within `after`: while tokens last, a backup goes to the
        // other server; once spent, only the primary is sent. Released handlers fail
        // retryably, which would send a backup at once: either way, each call's backup has
        // been decided before the call ends.
        let discovery = try start(["a", "b"])
        let budget = RPCRetryBudget(ratio: 0, maximum: 2)
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .backup(after: .milliseconds(1)), retryBudget: budget))
        let gates = servers.map(\.gate)
        var primaries: [Int] = [] // the server each budget-less call went to
        for call in 0..<5 {
            let before = gates.map(\.arrived)
            gates.forEach { $0.close() }
            let sent = call < 2 ? 2 : 1
            let pending = Task { () -> RPCError? in
                do throws(RPCError) {
                    _ = try await cluster.call(TestMethods.held, 1, options: .init(idempotent: true))
                    return nil
                } catch {
                    return error
                }
            }
            let reached = await eventually { zip(gates, before).map { $0.arrived - $1 }.reduce(0, +) >= sent }
            XCTAssertTrue(reached, "call \(call): \(gates.map(\.arrived)) after \(before)")
            gates.forEach { $0.open() }
            let error = await pending.value
            XCTAssertEqual(error?.code, .unavailable, "call \(call)")
            let perServer = zip(gates, before).map { $0.arrived - $1 }
            if call < 2 {
                XCTAssertEqual(perServer, [1, 1], "call \(call): a primary and a backup on the other server")
            } else {
                XCTAssertEqual(perServer.reduce(0, +), 1, "call \(call): \(perServer), budget spent: the primary only")
                primaries.append(perServer.firstIndex(of: 1) ?? -1)
            }
        }
        // A refused backup takes no round-robin turn, so the primaries still alternate
        // (they all went to one server when the backup was picked before the budget said no).
        XCTAssertEqual(primaries.count, 3)
        XCTAssertTrue(zip(primaries, primaries.dropFirst()).allSatisfy { $0 != $1 }, "primaries: \(primaries)")
        XCTAssertEqual(budget.tokens, 0)
        XCTAssertEqual(cluster.statistics.map(\.calls).reduce(0, +), 5 + 2)
        await cluster.close()
    }

    func testForkCancelsTheLosersOnceOneServerAnswers() async throws {
        // Every server holds the call at its gate until the test opens one: "a" answers,
        // "b" and "c" stay shut, so only the fork's cancellation can end their calls.
        let discovery = try start(["a", "b", "c"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        let (winner, losers) = (servers[0], Array(servers[1...]))
        let outcome = Locked<String?>(nil)
        let forked = Task {
            let name = try await cluster.fork(TestMethods.held, 0, fanout: 3)
            outcome.withLock { $0 = name }
            return name
        }
        let servers = self.servers
        let arrived = await eventually { servers.allSatisfy { $0.gate.arrived == 1 } }
        XCTAssertTrue(arrived, "\(servers.map(\.gate.arrived))")
        winner.gate.open()
        // The fork returns while the losers' gates are still shut ...
        let returned = await eventually { outcome.withLock { $0 } != nil }
        XCTAssertTrue(returned, "fork waited for the losing servers")
        // ... because their calls were cancelled, and their servers cancelled the handlers.
        let cancelled = await eventually { losers.allSatisfy { $0.gate.cancelled == 1 } }
        XCTAssertTrue(cancelled, "\(losers.map(\.gate.cancelled))")
        XCTAssertEqual(winner.gate.cancelled, 0)
        let statistics = cluster.statistics
        XCTAssertEqual(statistics.map(\.inFlight), [0, 0, 0])
        XCTAssertEqual(statistics.map(\.failed).reduce(0, +), 2) // the two cancelled calls
        losers.forEach { $0.gate.open() } // so a broken fork still ends
        let name = try await forked.value
        XCTAssertEqual(name, "a")
        await cluster.close()
    }

    func testCallWithMetadataReturnsTheMetadataOfTheAttemptThatSucceeded() async throws {
        // "a" always fails: failover moves each call it gets to "b", whose metadata (and
        // only its) comes back, with the request's.
        let discovery = try start([("a", 0, 1000, false), ("b", 0, 0, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery, configuration: .init(
            failMode: .failover(maxAttempts: 2), retryBudget: .unlimited))
        for i in 0..<4 {
            let options = RPCCallOptions(idempotent: true, metadata: ["trace": "t-\(i)"])
            let response = try await cluster.callWithMetadata(TestMethods.stamped, i, options: options)
            XCTAssertEqual(response.value, "b")
            XCTAssertEqual(response.metadata["server"], "b")
            XCTAssertEqual(response.metadata["trace"], "t-\(i)")
        }
        // "a" took some first attempts (where round-robin starts varies), and each moved on.
        let statistics = cluster.statistics
        let a = try XCTUnwrap(statistics.first { $0.instance == servers[0].instance })
        let b = try XCTUnwrap(statistics.first { $0.instance == servers[1].instance })
        XCTAssertGreaterThan(a.failed, 0)
        XCTAssertEqual(a.failed, a.calls)
        XCTAssertEqual(b.succeeded, 4)
        XCTAssertEqual(b.failed, 0)
        await cluster.close()
    }

    func testGoCompletesOnceWithTheReplyOrTheCancellation() async throws {
        let discovery = try start(["a"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        let results = Locked<[Result<String, RPCError>]>([])
        cluster.go(TestMethods.who, 0) { result in results.withLock { $0.append(result) } }
        let answered = await eventually { results.withLock { $0.count } == 1 }
        XCTAssertTrue(answered)
        XCTAssertEqual(try results.withLock { $0 }.first?.get(), "a")

        // A call the server holds ends with .cancelled when its task is cancelled, and the
        // server's handler is cancelled too.
        results.withLock { $0 = [] }
        let call = cluster.go(TestMethods.held, 0) { result in results.withLock { $0.append(result) } }
        let server = servers[0]
        let arrived = await eventually { server.gate.arrived == 1 }
        XCTAssertTrue(arrived)
        call.cancel()
        let ended = await eventually { results.withLock { $0.count } == 1 }
        XCTAssertTrue(ended)
        let cancelledOnServer = await eventually { server.gate.cancelled == 1 }
        XCTAssertTrue(cancelledOnServer)
        server.gate.open()
        try await Task.sleep(for: .milliseconds(50)) // a second completion would show by now
        let outcome = results.withLock { $0 }
        XCTAssertEqual(outcome.count, 1)
        guard case .failure(let error) = outcome.first else { return XCTFail("\(outcome)") }
        XCTAssertEqual(error.code, .cancelled)
        await cluster.close()
    }

    func testBroadcastAndFork() async throws {
        let discovery = try start([("a", 0, 0, true), ("b", 0, 0, false), ("c", 5_000, 0, false)])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        let all = try await cluster.broadcastAll(TestMethods.who, 0)
        XCTAssertEqual(Set(all), ["a", "b", "c"])
        let collected = await cluster.broadcast(TestMethods.only, 0)
        XCTAssertEqual(collected.count, 3)
        XCTAssertEqual(collected.filter { (try? $0.result.get()) == "a" }.count, 1)
        XCTAssertEqual(collected.filter { if case .failure(let e) = $0.result { e.code == .unimplemented } else { false } }.count, 2)
        do {
            _ = try await cluster.broadcastAll(TestMethods.only, 0)
            XCTFail("two servers lack the method")
        } catch {
            XCTAssertEqual(error.code, .unimplemented)
        }
        // Fork over every server: the slow one never wins.
        for _ in 0..<3 {
            let name = try await cluster.fork(TestMethods.slow, 0, fanout: 3)
            XCTAssertNotEqual(name, "c")
        }
        await cluster.close()
    }

    func testNotificationsAreSpreadOverTheServers() async throws {
        let discovery = try start(["a", "b", "c"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        for i in 0..<6 { try cluster.notify(TestMethods.note.name, i) }
        let servers = self.servers
        let arrived = await eventually { servers.allSatisfy { $0.notes.value == 2 } }
        XCTAssertTrue(arrived, "\(servers.map(\.notes.value))")
        XCTAssertEqual(cluster.statistics.map(\.calls), [2, 2, 2])
        await cluster.close()
    }

    func testConnectionPoolSpreadsCallsOverConnections() async throws {
        let discovery = try start(["a"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                 configuration: .init(connectionsPerServer: 3))
        let server = servers[0].server
        let connected = await eventually { server.connectionCount == 3 }
        XCTAssertTrue(connected)
        for i in 0..<30 { _ = try await cluster.call(TestMethods.who, i) }
        XCTAssertEqual(cluster.statistics[0].callsPerConnection, [10, 10, 10])
        await cluster.close()
    }

    func testMembershipChangesReachTheClientWithoutARestart() async throws {
        let discovery = try start(["a", "b"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery)
        let extra = try TestServer(name: "c")
        servers.append(extra)
        discovery.update("Test", to: servers.map(\.instance))
        let joined = await cluster.waitForServers { $0.count == 3 }
        XCTAssertTrue(joined)
        var names: [String] = []
        for i in 0..<30 { names.append(try await cluster.call(TestMethods.who, i)) }
        XCTAssertEqual(tally(names)["c"], 10)

        discovery.update("Test", to: [servers[0].instance])
        let left = await cluster.waitForServers { $0.count == 1 }
        XCTAssertTrue(left)
        names = []
        for i in 0..<5 { names.append(try await cluster.call(TestMethods.who, i)) }
        XCTAssertEqual(names, Array(repeating: "a", count: 5))
        await cluster.close()
    }

    func testAChangedWeightTakesEffect() async throws {
        let discovery = try start(["a", "b"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                 configuration: .init(selection: .weightedRoundRobin))
        var heavy = servers[0].instance
        heavy.weight = 4
        discovery.update("Test", to: [heavy, servers[1].instance])
        let changed = await cluster.waitForServers { $0.contains(heavy) }
        XCTAssertTrue(changed)
        var names: [String] = []
        for i in 0..<50 { names.append(try await cluster.call(TestMethods.who, i)) }
        XCTAssertEqual(tally(names), ["a": 40, "b": 10])
        await cluster.close()
    }

    func testAStoppedServerIsSkippedAndItsCallsGoElsewhere() async throws {
        let discovery = try start(["a", "b"])
        let cluster = try await RPCClusterClient(service: "Test", discovery: discovery,
                                                 configuration: .init(failMode: .failFast))
        servers[0].stop() // still listed: the client learns from the closed connection
        let stoppedPort = servers[0].port
        let noticed = await eventually { cluster.statistics.first { $0.instance.port == stoppedPort }?.connected == 0 }
        XCTAssertTrue(noticed)
        for i in 0..<10 {
            let name = try await cluster.call(TestMethods.who, i)
            XCTAssertEqual(name, "b")
        }
        servers[1].stop()
        _ = await eventually { cluster.statistics.allSatisfy { $0.connected == 0 } }
        do {
            _ = try await cluster.call(TestMethods.who, 0)
            XCTFail("no server is up")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.requestNeverSent, "\(error)")
        }
        await cluster.close()
    }
}

/// Waits (polling) until `condition` holds or `seconds` pass.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
