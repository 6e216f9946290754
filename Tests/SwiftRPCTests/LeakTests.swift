import Foundation
import RPCExamples
import XCTest

@testable import SwiftRPC

/// 100,000 calls mixing successes, timeouts, cancellations and dropped connections: every
/// call ends exactly once, and nothing is left behind — no pending slot, no handler task,
/// no continuation, no file descriptor.
final class LeakTests: XCTestCase {
    func testNothingLeaksAfterAHundredThousandMixedCalls() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 2))
        try registerReferenceServices(on: server)
        let port = try server.start()
        defer { server.stop() }
        let fdsBefore = try openFileDescriptors()

        let total = 100_000
        let batch = 2_000
        let ended = Locked([UInt8](repeating: 0, count: total))
        let outcomes = Locked([String: Int]())
        @Sendable func finish(_ i: Int, _ result: Result<Int, RPCError>) {
            ended.withLock { $0[i] &+= 1 }
            let kind: String = switch result {
            case .success: "ok"
            case .failure(let e): "\(e.code)"
            }
            outcomes.withLock { $0[kind, default: 0] += 1 }
        }

        let steady = try await RPCClient.connect(host: "127.0.0.1", port: port)
        var next = 0
        while next < total {
            let dropped = try await RPCClient.connect(host: "127.0.0.1", port: port)
            let end = min(next + batch, total)
            // The calls of the connection about to drop go first, and the connection drops
            // right after them: their handlers sleep far longer than that takes.
            for i in next..<end where i % 20 == 4 || i % 20 == 5 {
                dropped.go(Bench.sleep, 500) { finish(i, $0) }
            }
            dropped.close()
            for i in next..<end {
                switch i % 20 {
                case 0, 1: // times out: the handler sleeps past the caller's deadline
                    steady.go(Bench.sleep, 50, timeout: .milliseconds(5)) { finish(i, $0) }
                case 2, 3: // cancelled by the caller
                    steady.go(Bench.sleep, 50) { finish(i, $0) }.cancel()
                case 4, 5: // sent above on the dropped connection
                    break
                default:
                    steady.go(Arith.multiply, ArithArgs(A: i, B: 2)) { finish(i, $0) }
                }
            }
            let done = await eventually(20) { ended.withLock { e in e[next..<end].allSatisfy { $0 > 0 } } }
            XCTAssertTrue(done, "calls \(next)..<\(end) did not all end")
            next = end
        }

        // Every call ended, and exactly once (a second ending would show up meanwhile).
        try await Task.sleep(for: .milliseconds(200))
        let counts = ended.withLock { $0 }
        XCTAssertEqual(counts.filter { $0 == 1 }.count, total)
        let tally = outcomes.withLock { $0 }
        XCTAssertEqual(tally.values.reduce(0, +), total)
        XCTAssertEqual(tally["ok"], total * 14 / 20)
        XCTAssertEqual(tally["deadline exceeded"], total * 2 / 20)
        XCTAssertEqual(tally["cancelled"], total * 2 / 20)
        XCTAssertEqual(tally["unavailable"], total * 2 / 20)

        // Nothing left: no pending slot, no handler task, no file descriptor.
        XCTAssertEqual(steady.pendingCount, 0)
        XCTAssertEqual(steady.statistics.pending, 0)
        let handlersGone = await eventually(5) { server.runningHandlerCount == 0 }
        XCTAssertTrue(handlersGone, "\(server.runningHandlerCount) handler tasks left")
        steady.close()
        // (Earlier tests' connections may still be closing when this one starts: fewer
        // descriptors afterwards is fine, more would be a leak.)
        let fdsSettled = await eventually(5) { ((try? self.openFileDescriptors()) ?? .max) <= fdsBefore }
        XCTAssertTrue(fdsSettled, "sockets: \(fdsBefore) before, \((try? openFileDescriptors()) ?? -1) after")

        let connectionsGone = await eventually(5) { server.connectionCount == 0 }
        XCTAssertTrue(connectionsGone)
    }

    /// Open sockets (connections and listeners): what a leaked connection would leave.
    /// (Other descriptors come and go with Swift's runtime: Dispatch makes timer fds lazily.)
    private func openFileDescriptors() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").filter { fd in
            ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "")
                .hasPrefix("socket:")
        }.count
    }
}
