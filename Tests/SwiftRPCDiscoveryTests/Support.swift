import Foundation
import Synchronization
import RPCExamples
import SwiftRPC
import SwiftRPCDiscovery
import XCTest

/// Skips when no event loop can start here: only when `SWIFTRPC_BACKEND=uring` forces
/// io_uring on a machine that refuses it (otherwise the core falls back to epoll).
func requireEventLoop() throws {
    let loop = Result { () throws(RPCError) in try RPCEventLoop.shared() }
    if case .failure(let error) = loop, error.code == .unavailable {
        throw XCTSkip("SWIFTRPC_BACKEND=uring forces io_uring, which this machine refuses: \(error.message)")
    }
    _ = try loop.get()
}

/// A free TCP port on loopback (bound then released; etcd needs numbers up front).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw XCTSkip("no sockets here") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard ok else { throw XCTSkip("cannot bind a loopback port") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A real etcd on loopback, in a temporary data dir, for one test. Skips the test (with
/// the reason) when the etcd binary is missing or does not come up.
final class EtcdProcess {
    private(set) var process = Process()
    let dataDir: URL
    let endpoint: String
    let client: EtcdClient
    private let binary: URL
    private let arguments: [String]

    init() throws {
        let path = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let path else {
            throw XCTSkip("etcd is not installed (scripts/install-deps.sh installs Debian's etcd-server)")
        }
        let clientPort = try freePort(), peerPort = try freePort()
        dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swiftrpc-etcd-\(UUID().uuidString)")
        endpoint = "http://127.0.0.1:\(clientPort)"
        let peer = "http://127.0.0.1:\(peerPort)"
        binary = URL(fileURLWithPath: path)
        arguments = [
            "--name", "test", "--data-dir", dataDir.path,
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=\(peer)", "--log-level", "error",
        ]
        client = EtcdClient(endpoint: endpoint)
        do { try launch() } catch { throw XCTSkip("etcd did not start: \(error)") }
    }

    private func launch() throws {
        process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Waits until etcd answers (up to 10 s); skips the test when it never does.
    func ready() async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? await client.range(prefix: "probe/")) != nil { return }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        stop()
        throw XCTSkip("etcd at \(endpoint) did not become ready")
    }

    /// Stops etcd (SIGTERM) and starts it again on the same ports and data.
    func restart() async throws {
        process.terminate()
        process.waitUntilExit()
        try launch()
        try await ready()
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: dataDir)
    }

    func shutdown() async {
        try? await client.shutdown()
        stop()
    }
}

/// The reference service plus `Test.Who` (returns the server's name) and `Test.Slow`
/// (sleeps the given milliseconds, then returns the server's name).
enum TestMethods {
    static let who = RPCMethod<Int, String>("Test.Who")
    static let slow = RPCMethod<Int, String>("Test.Slow")
    static let echo = RPCMethod<[UInt8], [UInt8]>("Bench.Echo")
    /// Fails with `.unavailable` (sent by the server) the first `failFirst` times.
    static let flaky = RPCMethod<Int, String>("Test.Flaky")
    /// Registered only on servers made with `extra: true`.
    static let only = RPCMethod<Int, String>("Test.Only")
    /// Counts notifications in ``TestServer/notes``.
    static let note = RPCMethod<Int, Int>("Test.Note")
    /// Waits for the server's ``TestServer/gate`` to open, then returns the server's name
    /// (argument 0) or fails with `.unavailable` (any other argument).
    static let held = RPCMethod<Int, String>("Test.Held")
    /// Returns the server's name, and sends it back in the response metadata ("server")
    /// with the request's "trace" entry; fails like ``flaky`` (its own count).
    static let stamped = RPCMethod<Int, String>("Test.Stamped")
    /// A server stream of the server's name, `n` times; on a server named "refuses" it
    /// fails with `.unavailable` before sending anything.
    static let names = RPCServerStreamMethod<Int, String>("Test.Names")
    /// A client stream that takes one element and then fails with `.unavailable`.
    static let breaks = RPCClientStreamMethod<RPCNoArguments, Int, Int>("Test.Breaks")
}

/// An in-process server on a free loopback port.
final class TestServer: @unchecked Sendable {
    // @unchecked: `server` is set in init and then only used through its thread-safe API.
    let server: RPCServer
    let port: Int
    let name: String
    let notes = NoteCounter()
    /// What ``TestMethods/held`` waits for; starts closed.
    let gate = Gate()
    var instance: RPCServiceInstance { RPCServiceInstance(host: "127.0.0.1", port: port) }

    init(name: String, slowMillis: Int = 0, failFirst: Int = 0, extra: Bool = false) throws {
        self.name = name
        server = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, loops: 1))
        try registerReferenceServices(on: server)
        try server.register(TestMethods.who) { _, _ in name }
        try server.register(TestMethods.slow) { millis, _ in
            try await Task.sleep(for: .milliseconds(millis + slowMillis))
            return name
        }
        let flaky = Flaky(failFirst: failFirst)
        try server.register(TestMethods.flaky) { _, _ in
            if flaky.shouldFail() { throw RPCError(.unavailable, "\(name) is flaky") }
            return name
        }
        let stampedFlaky = Flaky(failFirst: failFirst)
        try server.register(TestMethods.stamped) { _, context in
            if stampedFlaky.shouldFail() { throw RPCError(.unavailable, "\(name) is flaky") }
            context.responseMetadata["server"] = name
            context.responseMetadata["trace"] = context.metadata["trace"] ?? "none"
            return name
        }
        if extra { try server.register(TestMethods.only) { _, _ in name } }
        try server.register(TestMethods.names) { n, writer, _ in
            if name == "refuses" { throw RPCError(.unavailable, "\(name) refuses streams") }
            for _ in 0..<n { try await writer.write(name) }
        }
        try server.register(TestMethods.breaks) { _, elements, _ in
            for try await _ in elements { throw RPCError(.unavailable, "\(name) broke mid-stream") }
            return 0
        }
        let notes = self.notes
        try server.register(TestMethods.note) { n, _ in notes.increment() }
        let gate = self.gate
        try server.register(TestMethods.held) { fail, _ in
            try await gate.wait()
            if fail != 0 { throw RPCError(.unavailable, "\(name) was told to fail") }
            return name
        }
        port = try server.start()
    }

    /// Stops the server and opens the gate, so no handler is left waiting.
    func stop() {
        server.stop()
        gate.open()
    }
}

/// Notifications a test server received.
final class NoteCounter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() -> Int { count.add(1, ordering: .relaxed).newValue }
    var value: Int { count.load(ordering: .relaxed) }
}

/// A latch the test opens and closes, and handlers wait on: it counts the waits that
/// arrived and those that ended because their task was cancelled (a server cancels a
/// handler when its caller cancels the call). Opening releases every waiter; a wait that
/// arrives while open passes at once.
final class Gate: Sendable {
    private struct State {
        var isOpen = false
        var waiters: [Int: CheckedContinuation<Void, any Error>] = [:]
        var arrived = 0
        var cancelled = 0
    }

    private let state = Locked(State())

    /// Waits that have started (passed or not).
    var arrived: Int { state.withLock { $0.arrived } }
    /// Waits ended by cancellation.
    var cancelled: Int { state.withLock { $0.cancelled } }

    /// Returns when the gate is open; throws `CancellationError` when the task is cancelled first.
    func wait() async throws {
        let id = state.withLock { s in
            s.arrived += 1
            return s.arrived
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Cancelled before the waiter is stored: the handler below found nothing to end.
                let now: Result<Void, any Error>? = state.withLock { s in
                    if s.isOpen { return .success(()) }
                    if Task.isCancelled {
                        s.cancelled += 1
                        return .failure(CancellationError())
                    }
                    s.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { s in
                let waiter = s.waiters.removeValue(forKey: id)
                if waiter != nil { s.cancelled += 1 }
                return waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Opens the gate, releasing every waiter.
    func open() {
        let waiters = state.withLock { s in
            s.isOpen = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Closes the gate: later waits block until the next ``open()``.
    func close() { state.withLock { $0.isOpen = false } }
}

/// Counts calls; the first `failFirst` fail.
final class Flaky: Sendable {
    let failFirst: Int
    let calls = Atomic<Int>(0)
    init(failFirst: Int) { self.failFirst = failFirst }
    func shouldFail() -> Bool { calls.add(1, ordering: .relaxed).oldValue < failFirst }
}

/// `rpcbench`, next to the test executable (built by `swift build`), or nil.
func rpcbenchBinary() -> URL? {
    let starts = [Bundle.main.executableURL, URL(fileURLWithPath: CommandLine.arguments[0])].compactMap { $0 }
    for start in starts {
        var dir = start.resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("rpcbench")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
    }
    return nil
}

/// An `rpcbench serve` child process, optionally registering itself in etcd.
final class ServeProcess: @unchecked Sendable {
    // @unchecked: `port` is written once in init; afterwards only Process's kill and
    // wait are used, from one task at a time.
    let process = Process()
    private(set) var port = 0

    init(binary: URL, arguments: [String]) throws {
        process.executableURL = binary
        process.arguments = ["serve", "--port", "0", "--loops", "1"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // "listening on HOST:PORT" is the first line.
        var line = Data()
        while let byte = try out.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
            process.terminate()
            throw XCTSkip("rpcbench serve did not start: \(text)")
        }
        self.port = port
    }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func terminate() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
