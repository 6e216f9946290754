@testable import SwiftRPCDiscovery
import XCTest

/// The selection strategies over snapshots of servers without connections: which server
/// each pick lands on, counted. Deterministic (round-robin counters, seeded randomness).
final class SelectorTests: XCTestCase {
    private func snapshot(_ weights: [Int], _ selection: RPCSelection) -> ServerSnapshot {
        let endpoints = weights.enumerated().map { i, w in
            ServerEndpoint(instance: RPCServiceInstance(host: "10.0.0.\(i + 1)", port: 7000, weight: w), connections: [])
        }
        return ServerSnapshot(endpoints: endpoints, selection: selection)
    }

    private func counts(_ selector: Selector, _ snap: ServerSnapshot, picks: Int, key: (Int) -> String? = { _ in nil },
                        usable: (Int) -> Bool = { _ in true }) -> [Int] {
        var counts = [Int](repeating: 0, count: snap.endpoints.count)
        for i in 0..<picks {
            if let index = selector.pick(snap, key: key(i), usable: usable) { counts[index] += 1 }
        }
        return counts
    }

    func testRoundRobinVisitsEachServerInTurn() {
        let snap = snapshot([1, 1, 1], .roundRobin)
        let selector = Selector(.roundRobin, seed: 1)
        XCTAssertEqual((0..<6).map { _ in selector.pick(snap, key: nil) { _ in true }! }, [0, 1, 2, 0, 1, 2])
    }

    func testRoundRobinSkipsUnusableServers() {
        let snap = snapshot([1, 1, 1], .roundRobin)
        XCTAssertEqual(counts(Selector(.roundRobin, seed: 1), snap, picks: 30, usable: { $0 != 1 }), [15, 0, 15])
        XCTAssertNil(Selector(.roundRobin, seed: 1).pick(snap, key: nil) { _ in false })
    }

    func testWeightedRoundRobinIsProportionalAndSmooth() {
        let snap = snapshot([5, 1, 1], .weightedRoundRobin)
        XCTAssertEqual(snap.schedule, [0, 0, 1, 0, 2, 0, 0]) // nginx's example: a a b a c a a
        XCTAssertEqual(counts(Selector(.weightedRoundRobin, seed: 1), snap, picks: 700), [500, 100, 100])
        let reduced = snapshot([20, 10], .weightedRoundRobin)
        XCTAssertEqual(reduced.schedule.count, 3) // weights divided by their gcd
    }

    func testRandomIsSeededAndCoversEveryServer() {
        let snap = snapshot([1, 1, 1, 1], .random)
        let a = counts(Selector(.random, seed: 42), snap, picks: 4000)
        let b = counts(Selector(.random, seed: 42), snap, picks: 4000)
        XCTAssertEqual(a, b)
        for c in a { XCTAssertGreaterThan(c, 800); XCTAssertLessThan(c, 1200) }
    }

    func testConsistentHashKeepsKeysOnTheirServerAndMovesOnlyTheLeaversKeys() {
        let three = snapshot([1, 1, 1], .consistentHash(virtualNodes: 100))
        let selector = Selector(.consistentHash(virtualNodes: 100), seed: 1)
        var owner: [String: Int] = [:]
        for k in 0..<3000 {
            let key = "user-\(k)"
            let first = selector.pick(three, key: key) { _ in true }!
            XCTAssertEqual(selector.pick(three, key: key) { _ in true }, first) // stable
            owner[key] = first
        }
        let spread = (0..<3).map { s in owner.values.filter { $0 == s }.count }
        for c in spread { XCTAssertGreaterThan(c, 600, "\(spread)") } // roughly even
        // Server 1 down: its keys move, every other key stays where it was.
        var moved = 0
        for (key, was) in owner {
            let now = selector.pick(three, key: key) { $0 != 1 }!
            XCTAssertNotEqual(now, 1)
            if was != 1 { XCTAssertEqual(now, was, key) } else { moved += 1 }
        }
        XCTAssertEqual(moved, spread[1])
    }

    func testLeastLoadedPrefersFewerCallsInFlight() {
        let snap = snapshot([1, 1], .leastLoaded)
        snap.endpoints[0].adjustInFlight(10)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [0, 100])
        // Three servers, one loaded: two random draws, so it wins only when drawn twice
        // (never: the two draws are distinct).
        let three = snapshot([1, 1, 1], .leastLoaded)
        three.endpoints[2].adjustInFlight(5)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), three, picks: 300)[2], 0)
        // Unusable servers are skipped even when idle.
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), three, picks: 50, usable: { $0 == 2 }), [0, 0, 50])
    }

    func testLeastLoadedBreaksLoadTiesByObservedLatency() {
        let snap = snapshot([1, 1], .leastLoaded)
        let (slow, fast) = (snap.endpoints[0], snap.endpoints[1])
        // A completed call feeds the moving average, as `attempt` does: in flight, then ended.
        func complete(_ server: ServerEndpoint, nanos: Int) {
            server.adjustInFlight(1)
            server.ended(success: true, nanos: nanos)
        }
        // Nothing recorded: a tie both ways, so the two random draws share the picks.
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100).filter { $0 > 0 }.count, 2)

        complete(slow, nanos: 10_000_000)
        complete(fast, nanos: 2_000_000) // the first sample is taken whole
        XCTAssertEqual([slow.latencyNanos, fast.latencyNanos], [10_000_000, 2_000_000])
        XCTAssertEqual([slow.inFlight, fast.inFlight], [0, 0])
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [0, 100])
        // Equal non-zero loads are a tie too; unequal loads outrank latency.
        slow.adjustInFlight(3)
        fast.adjustInFlight(3)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [0, 100])
        fast.adjustInFlight(1)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [100, 0])
        fast.adjustInFlight(-1)

        // One slow call moves the average an eighth of the way (2 + 48/8 = 8 ms): still
        // the faster; a second (8 + 42/8 = 13.25 ms) makes it the slower.
        complete(fast, nanos: 50_000_000)
        XCTAssertEqual(fast.latencyNanos, 8_000_000)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [0, 100])
        complete(fast, nanos: 50_000_000)
        XCTAssertEqual(fast.latencyNanos, 13_250_000)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [100, 0])
        // Failed and untimed calls leave the average alone.
        complete(slow, nanos: 0)
        slow.adjustInFlight(1)
        slow.ended(success: false, nanos: 90_000_000)
        XCTAssertEqual(slow.latencyNanos, 10_000_000)
        XCTAssertEqual(counts(Selector(.leastLoaded, seed: 7), snap, picks: 100), [100, 0])
    }

    func testEmptySnapshotPicksNothing() {
        for selection in [RPCSelection.random, .roundRobin, .weightedRoundRobin, .consistentHash(), .leastLoaded] {
            XCTAssertNil(Selector(selection, seed: 1).pick(snapshot([], selection), key: "k") { _ in true })
        }
    }
}
