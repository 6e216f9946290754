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
        // The server honours the deadline too and may answer 4 before the client's own timer
        // is seen (then the client counts a reply, not a timeout): the timeout counter is
        // checked against a peer that never answers, in testRepliesAfterATimeoutAreCountedAsLate.
        XCTAssertLessThanOrEqual(client.statistics.timeouts, 1)
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
        // A peer that answers only once the client has given up, so the reply is late by
        // construction (a real server honours the deadline and could answer 4 in time).
        let peer = try SilentPeer()
        let client = try await RPCClient.connect(host: "127.0.0.1", port: peer.port)
        defer { client.close() }
        let accepted = try XCTUnwrap(peer.accept(timeoutMilliseconds: 5000))
        defer { accepted.close() }
        do {
            _ = try await client.call(Self.stubborn, 300, timeout: .milliseconds(50))
            XCTFail("expected a timeout")
        } catch {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        XCTAssertEqual(client.statistics.timeouts, 1)
        // [0, msgid, method, params, ...]: answer [1, msgid, nil, 300], msgid as it was encoded.
        let request = try XCTUnwrap(accepted.readFrame(timeoutMilliseconds: 5000))
        let msgidLength = [0xcc: 2, 0xcd: 3, 0xce: 5][Int(request[2]), default: 1]
        try accepted.send(frame: [0x94, 0x01] + request[2..<2 + msgidLength] + [0xc0, 0xcd, 0x01, 0x2c])
        let late = await eventually(3) { client.statistics.lateReplies >= 1 }
        XCTAssertTrue(late)
        XCTAssertEqual(client.pendingCount, 0)
    }

}

