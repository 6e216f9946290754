import Glibc
import Logging
import RPCExamples
import ServiceLifecycle
import XCTest

@testable import SwiftRPC

/// Graceful shutdown, dead peers, and running as a swift-service-lifecycle Service.
final class LifecycleTests: XCTestCase {
    override func setUp() async throws { try requireEventLoop() }

    private func startServer() throws -> (RPCServer, Int) {
        let server = RPCServer(configuration: .init(loops: 1, drainTimeout: .seconds(3)))
        try registerReferenceServices(on: server)
        return (server, try server.start())
    }

    func testGracefulShutdownLetsRunningCallsFinishAndRefusesNewOnes() async throws {
        let (server, port) = try startServer()
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        let results = Locked<[Result<Int, RPCError>]>([])
        for _ in 0..<5 {
            client.go(Bench.sleep, 300) { r in results.withLock { $0.append(r) } }
        }
        let running = await eventually { server.runningHandlerCount == 5 }
        XCTAssertTrue(running)
        let shutdown = Task { await server.shutdown(drainTimeout: .seconds(3)) }
        try await Task.sleep(for: .milliseconds(100))
        do {
            _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 2))
            XCTFail("a call during the drain must be refused")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertEqual(error.message, "server is shutting down")
        }
        let drained = await shutdown.value
        XCTAssertTrue(drained)
        let finished = results.withLock { $0 }
        XCTAssertEqual(finished.count, 5)
        for r in finished { XCTAssertEqual(try? r.get(), 300) }
        // Nothing listens any more.
        do {
            _ = try await RPCClient.connect(host: "127.0.0.1", port: port)
            XCTFail("connected to a stopped server")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
        }
    }

    func testDrainTimeoutCutsSlowCallsOff() async throws {
        let (server, port) = try startServer()
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        let ended = Locked<[RPCError]>([])
        for _ in 0..<3 {
            client.go(Bench.sleep, 10_000) { r in if case .failure(let e) = r { ended.withLock { $0.append(e) } } }
        }
        let running = await eventually { server.runningHandlerCount == 3 }
        XCTAssertTrue(running)
        let start = ContinuousClock.now
        let drained = await server.shutdown(drainTimeout: .milliseconds(150))
        XCTAssertFalse(drained)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        let allEnded = await eventually { ended.withLock { $0.count } == 3 }
        XCTAssertTrue(allEnded)
        for e in ended.withLock({ $0 }) { XCTAssertEqual(e.code, .unavailable) }
    }

    func testHeartbeatDeclaresASilentPeerDead() async throws {
        let peer = try SilentPeer()
        // The dead time runs from the connect: time it from before the connect returns.
        let start = ContinuousClock.now
        let client = try await RPCClient.connect(host: "127.0.0.1", port: peer.port, configuration: .init(
            heartbeatInterval: .milliseconds(50), deadAfter: .milliseconds(200)))
        do {
            _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) // no timeout of its own
            XCTFail("a silent peer answered")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
        }
        let took = ContinuousClock.now - start
        XCTAssertGreaterThanOrEqual(took, .milliseconds(190))
        XCTAssertLessThan(took, .seconds(2))
        XCTAssertFalse(client.isConnected)
    }

    func testHeartbeatsKeepALiveIdleConnection() async throws {
        let (server, port) = try startServer()
        defer { server.stop() }
        // Idle three times as long as a silent peer may stay silent: without heartbeats the
        // connection would be declared dead. The margin (a 500 ms dead time, pings every
        // 50 ms) takes a loop stall of several hundred ms on a loaded, sanitized machine.
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port, configuration: .init(
            heartbeatInterval: .milliseconds(50), deadAfter: .milliseconds(500)))
        try await Task.sleep(for: .milliseconds(1500))
        XCTAssertTrue(client.isConnected)
        let product = try await client.call(Arith.multiply, ArithArgs(A: 3, B: 4))
        XCTAssertEqual(product, 12)
    }

    func testRunsAsAServiceAndDrainsOnGracefulShutdown() async throws {
        let server = RPCServer(configuration: .init(loops: 1, drainTimeout: .seconds(5)))
        // A handler that runs until the test opens the gate: no timing window to miss on a
        // slow (sanitized, shared) machine.
        let gate = Locked(false)
        let held = RPCMethod<Int, Int>("Test.Held")
        try server.register(held) { n, _ in
            while !gate.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
            return n
        }
        let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let started = await eventually { server.port != nil }
        XCTAssertTrue(started)
        let client = try await RPCClient.connect(host: "127.0.0.1", port: server.port!)
        let slow = Task { try await client.call(held, 200) }
        let inFlight = await eventually { server.runningHandlerCount == 1 }
        XCTAssertTrue(inFlight)
        await group.triggerGracefulShutdown()
        try await Task.sleep(for: .milliseconds(50)) // the drain now waits for the held call
        gate.withLock { $0 = true }
        try await running.value
        let answer = try await slow.value
        XCTAssertEqual(answer, 200) // it was let finish
        XCTAssertNil(server.port)
    }
}

/// Reconnecting clients.
final class ReconnectTests: XCTestCase {
    override func setUp() async throws { try requireEventLoop() }

    func testCallsWaitForTheNewConnectionOrFailFast() async throws {
        let first = RPCServer(configuration: .init(loops: 1))
        try registerReferenceServices(on: first)
        let port = try first.start()
        let backoff = ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port,
                                                 configuration: .init(reconnect: backoff))
        let failFast = try await RPCClient.connect(host: "127.0.0.1", port: port,
                                                   configuration: .init(reconnect: backoff, failFast: true))
        let before = try await client.call(Arith.multiply, ArithArgs(A: 2, B: 2))
        XCTAssertEqual(before, 4)
        XCTAssertEqual(client.statistics.reconnects, 0)

        first.stop()
        let down = await eventually { !client.isConnected && !failFast.isConnected }
        XCTAssertTrue(down)
        // While the server is down: a call waits for the new connection...
        let waiting = Task { try await client.call(Arith.multiply, ArithArgs(A: 3, B: 3)) }
        // ...a call with a short timeout gives up...
        do {
            _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1), timeout: .milliseconds(50))
            XCTFail("expected a timeout while disconnected")
        } catch {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        // ...and a fail-fast client refuses at once.
        do {
            _ = try await failFast.call(Arith.multiply, ArithArgs(A: 1, B: 1))
            XCTFail("fail-fast must not wait")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
        }

        // The server comes back on the same port: the waiting call is answered.
        try await Task.sleep(for: .milliseconds(150))
        let second = RPCServer(configuration: .init(port: port, loops: 1))
        try registerReferenceServices(on: second)
        try second.start()
        defer { second.stop() }
        let answered = try await waiting.value
        XCTAssertEqual(answered, 9)
        XCTAssertTrue(client.isConnected)
        let back = await eventually(3) { failFast.isConnected }
        XCTAssertTrue(back)
        let again = try await failFast.call(Arith.multiply, ArithArgs(A: 5, B: 5))
        XCTAssertEqual(again, 25)
        XCTAssertEqual(client.statistics.reconnects, 1)
        XCTAssertEqual(failFast.statistics.reconnects, 1)
    }
}
