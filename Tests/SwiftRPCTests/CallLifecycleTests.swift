import Glibc
import RPCExamples
import XCTest

@testable import SwiftRPC

/// Timeouts, deadlines and cancellation, end to end.
final class CallLifecycleTests: XCTestCase {
    private var server: RPCServer!
    private var port = 0

    /// Ignores cancellation: blocks its thread for the given milliseconds.
    static let stubborn = RPCMethod<Int, Int>("Test.Stubborn")

    override func setUp() async throws {
        try requireEventLoop()
        server = RPCServer(configuration: .init(loops: 1))
        try registerReferenceServices(on: server)
        try server.register(Self.stubborn) { ms, _ in
            usleep(UInt32(ms) * 1000)
            return ms
        }
        port = try server.start()
    }

    override func tearDown() async throws { server?.stop() }

    func testTimeoutEndsTheCallAndCancelsTheHandler() async throws {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        let start = ContinuousClock.now
        do {
            _ = try await client.call(Bench.sleep, 5000, timeout: .milliseconds(100))
            XCTFail("expected a timeout")
        } catch {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        let took = ContinuousClock.now - start
        XCTAssertGreaterThanOrEqual(took, .milliseconds(90))
        XCTAssertLessThan(took, .seconds(2))
        XCTAssertEqual(client.pendingCount, 0)
        XCTAssertEqual(client.statistics.timeouts, 1)
        // The server stopped the 5 s sleep long before it would have ended.
        let stopped = await eventually(2) { self.server.runningHandlerCount == 0 }
        XCTAssertTrue(stopped)
        let fine = try await client.call(Bench.sleep, 1, timeout: .seconds(5))
        XCTAssertEqual(fine, 1)
    }

    func testDefaultTimeoutApplies() async throws {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port,
                                                 configuration: .init(defaultTimeout: .milliseconds(50)))
        do {
            _ = try await client.call(Bench.sleep, 2000)
            XCTFail("expected a timeout")
        } catch {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        // A per-call timeout overrides the default.
        let slow = try await client.call(Bench.sleep, 100, timeout: .seconds(5))
        XCTAssertEqual(slow, 100)
    }

    func testCancelFrameCancelsTheServerHandler() async throws {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        let ended = Locked<RPCError?>(nil)
        let call = client.go(Bench.sleep, 10_000) { result in
            if case .failure(let e) = result { ended.withLock { $0 = e } }
        }
        let running = await eventually { self.server.runningHandlerCount == 1 }
        XCTAssertTrue(running)
        call.cancel()
        let cancelled = await eventually { ended.withLock { $0 } != nil }
        XCTAssertTrue(cancelled)
        XCTAssertEqual(ended.withLock { $0 }?.code, .cancelled)
        let handlerGone = await eventually(2) { self.server.runningHandlerCount == 0 }
        XCTAssertTrue(handlerGone)
    }

    func testHandlersOfAClosedConnectionAreCancelled() async throws {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        for _ in 0..<3 { client.go(Bench.sleep, 10_000) { _ in } }
        let running = await eventually { self.server.runningHandlerCount == 3 }
        XCTAssertTrue(running)
        client.close()
        let stopped = await eventually(2) { self.server.runningHandlerCount == 0 }
        XCTAssertTrue(stopped, "\(self.server.runningHandlerCount) handlers still running")
    }

    func testRepliesAfterATimeoutAreCountedAsLate() async throws {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        do {
            _ = try await client.call(Self.stubborn, 300, timeout: .milliseconds(50))
            XCTFail("expected a timeout")
        } catch {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        // The server's own deadline answer (or the stubborn handler's) arrives too late.
        let late = await eventually(3) { client.statistics.lateReplies >= 1 }
        XCTAssertTrue(late)
        XCTAssertEqual(client.pendingCount, 0)
    }

}

