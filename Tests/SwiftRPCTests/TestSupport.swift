import Glibc
import SwiftRPC
import XCTest

/// Bytes the process holds on the heap: the sanitizer allocator's own count of what is
/// allocated and not freed when the tests run under ASan or TSan; else the resident set
/// after `malloc_trim` has handed glibc's free memory back (Glibc's module map has neither
/// `mallinfo2` nor `malloc_trim`, hence the look-ups).
func heapInUse() -> Int {
    typealias Counter = @convention(c) () -> Int
    typealias Trim = @convention(c) (Int) -> Int32
    if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "__sanitizer_get_current_allocated_bytes") {
        return unsafeBitCast(symbol, to: Counter.self)()
    }
    if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
        _ = unsafeBitCast(symbol, to: Trim.self)(0)
    }
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
          let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

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

/// A listening socket nobody accepts from: the kernel completes the handshake and buffers
/// what a client sends, but no byte ever comes back. A call to it can end only on the
/// client's side (its timeout, its heartbeat, its close), never by a server's reply —
/// unless the test accepts the connection and answers by hand (`accept`).
final class SilentPeer {
    private let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && listen(fd, 4) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard listening else {
            close(fd)
            throw RPCError(.unavailable, "silent peer: cannot listen (errno \(errno))")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The next connection a client opened, as a raw connection the test reads and writes
    /// frames on; nil when none comes within the timeout.
    func accept(timeoutMilliseconds: Int32) -> RawConnection? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, timeoutMilliseconds) == 1 else { return nil }
        let conn = Glibc.accept(fd, nil, nil)
        return conn >= 0 ? RawConnection(descriptor: conn) : nil
    }

    deinit { close(fd) }
}
