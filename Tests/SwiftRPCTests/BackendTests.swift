import Foundation
import RPCExamples
import SwiftRPC
import XCTest

/// The I/O backend is reported, and `SWIFTRPC_BACKEND` is obeyed (CI runs the whole suite
/// once as is and once with `SWIFTRPC_BACKEND=epoll`).
final class BackendTests: XCTestCase {
    func testLoopAndServerReportTheBackendInUse() async throws {
        try requireEventLoop()
        let loop = try RPCEventLoop()
        XCTAssertTrue(["io_uring", "epoll"].contains(loop.backend), "unexpected backend \(loop.backend)")
        switch ProcessInfo.processInfo.environment["SWIFTRPC_BACKEND"] {
        case "epoll": XCTAssertEqual(loop.backend, "epoll")
        case "uring": XCTAssertEqual(loop.backend, "io_uring")
        default: break
        }

        let server = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, loops: 1))
        try registerReferenceServices(on: server)
        XCTAssertNil(server.backend, "not running yet")
        let port = try server.start()
        defer { server.stop() }
        XCTAssertEqual(server.backend, loop.backend, "one process, one choice")

        let client = try await RPCClient.connect(host: "127.0.0.1", port: port, configuration: .init(eventLoop: loop))
        defer { client.close() }
        let product = try await client.call(Arith.multiply, ArithArgs(A: 6, B: 7))
        XCTAssertEqual(product, 42)
    }
}
