import SwiftRPC
import XCTest

/// Skips the calling test, saying why, when io_uring is refused here (seccomp, a kernel
/// with io_uring disabled): the tests that need real sockets cannot run there.
func requireIOUring() throws {
    let loop = Result { () throws(RPCError) in try RPCEventLoop.shared() }
    if case .failure(let error) = loop, error.code == .unavailable {
        throw XCTSkip("io_uring is refused on this machine: \(error.message)")
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
