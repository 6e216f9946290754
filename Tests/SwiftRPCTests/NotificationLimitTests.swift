import XCTest

@testable import SwiftRPC

/// Notifications get no reply, so only the server's own count holds them to the limit on
/// calls in flight per connection.
final class NotificationLimitTests: XCTestCase {
    func testNotificationsToASlowHandlerAreHeldToTheInFlightLimit() async throws {
        try requireEventLoop()
        var configuration = RPCServer.Configuration(loops: 1)
        configuration.maxCallsInFlightPerConnection = 4
        let server = RPCServer(configuration: configuration)
        let tally = Locked((running: 0, peak: 0, started: 0))
        try server.register(RPCMethod<Int, Bool>("Test.Slow")) { _, _ in
            tally.withLock { t in
                t.running += 1
                t.started += 1
                t.peak = max(t.peak, t.running)
            }
            try? await Task.sleep(for: .seconds(1))
            tally.withLock { $0.running -= 1 }
            return true
        }
        let port = try server.start()
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }

        for i in 0..<100 { try client.notify("Test.Slow", i) }
        // The ping is answered after every notification before it was taken or dropped.
        _ = try await client.call("rpc.ping", [Int](), as: Int?.self)
        let fourRunning = await eventually { tally.withLock { $0.started } == 4 }
        XCTAssertTrue(fourRunning)
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(tally.withLock { $0.started }, 4, "only the limit's worth ran; the rest were dropped")
        XCTAssertEqual(tally.withLock { $0.peak }, 4)

        // Once they finish their places are free again. The handlers' own tally drops to 0
        // a moment before the server gives their places back, so wait for both.
        let finished = await eventually {
            tally.withLock { $0.running } == 0 && server.runningNotificationCount == 0
        }
        XCTAssertTrue(finished, "\(tally.withLock { $0.running }) handlers, \(server.runningNotificationCount) server places still held")
        try client.notify("Test.Slow", 100)
        let ranAgain = await eventually { tally.withLock { $0.started } == 5 }
        XCTAssertTrue(ranAgain)
        XCTAssertTrue(client.isConnected)
    }
}
