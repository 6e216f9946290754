import SwiftRPC
import XCTest

/// Skips the calling test, saying why, when no event loop can start here. Where io_uring is
/// refused the core falls back to epoll, so that happens only when `SWIFTRPC_BACKEND=uring`
/// forces io_uring on a machine that refuses it.
func requireEventLoop() throws {
    let loop = Result { () throws(RPCError) in try RPCEventLoop.shared() }
    if case .failure(let error) = loop, error.code == .unavailable {
        throw XCTSkip("SWIFTRPC_BACKEND=uring forces io_uring, which this machine refuses: \(error.message)")
    }
    _ = try loop.get()
}

/// Waits (polling) until `condition` holds or `seconds` pass.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}
