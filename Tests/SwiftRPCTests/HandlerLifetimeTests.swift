import Glibc
import XCTest

@testable import SwiftRPC

/// What an async handler holds on the server is given back when it ends, or when its
/// connection does: its deadline, its place, its task.
final class HandlerLifetimeTests: XCTestCase {
    /// Finished calls with long deadlines used to leave a sleeping timer task each (about
    /// 3.3 KB) until the deadline passed: 10,000 such calls held ~33 MB for 120 s.
    func testFinishedCallsWithDeadlinesLeaveNothingBehind() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1))
        let quick = RPCMethod<Int, Int>("Test.Quick")
        try server.register(quick) { n, _ in n }
        let port = try server.start()
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }

        func batch(_ count: Int) async throws {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for start in stride(from: 0, to: count, by: 100) {
                    group.addTask {
                        for i in start..<start + 100 {
                            _ = try await client.call(quick, i, timeout: .seconds(120))
                        }
                        return 0
                    }
                }
                try await group.waitForAll()
            }
        }
        try await batch(500) // warm-up: what the server and client keep for good
        let settled = await eventually { server.runningHandlerCount == 0 }
        XCTAssertTrue(settled)
        let before = heapInUse()
        try await batch(10_000)
        let finished = await eventually { server.runningHandlerCount == 0 && server.watchedDeadlineCount == 0 }
        XCTAssertTrue(finished, "\(server.runningHandlerCount) running, \(server.watchedDeadlineCount) deadlines watched")
        let grown = heapInUse() - before
        XCTAssertLessThan(grown, 8 << 20, "10,000 finished calls still hold \(grown >> 10) KiB")
    }

    /// The deadline still answers 4 and cancels the handler, and is gone afterwards.
    func testAPassedDeadlineAnswersAndCancelsOnce() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1))
        let tally = Locked((started: 0, cancelled: 0, finished: 0))
        let slow = RPCMethod<Int, Int>("Test.Slow")
        try server.register(slow) { n, _ in
            tally.withLock { $0.started += 1 }
            do { try await Task.sleep(for: .seconds(10)) } catch { tally.withLock { $0.cancelled += 1 }; throw error }
            tally.withLock { $0.finished += 1 }
            return n
        }
        let port = try server.start()
        defer { server.stop() }
        // Raw frames, so the server's answer is seen rather than the client's own timeout.
        let raw = try RawConnection(port: port)
        defer { raw.close() }
        for msgid in UInt8(1)...3 {
            // [0, msgid, "Test.Slow", [1], {"rpc-timeout-us": msgid * 100 ms}]
            let us = UInt32(msgid) * 100_000
            var body: [UInt8] = [0x95, 0x00, msgid, 0xa9] + Array("Test.Slow".utf8) + [0x91, 0x01, 0x81, 0xae]
            body += Array("rpc-timeout-us".utf8) + [0xce, UInt8(us >> 24), UInt8(us >> 16 & 0xff), UInt8(us >> 8 & 0xff), UInt8(us & 0xff)]
            try raw.send(frame: body)
        }
        var codes: [Int: Int] = [:]
        for _ in 1...3 {
            // [1, msgid, [code, message], nil]
            let reply = try XCTUnwrap(raw.readFrame(timeoutMilliseconds: 5000))
            XCTAssertEqual(Array(reply.prefix(2)), [0x94, 0x01])
            XCTAssertEqual(reply[3], 0x92)
            codes[Int(reply[2])] = Int(reply[4])
        }
        XCTAssertEqual(codes, [1: 4, 2: 4, 3: 4])
        // Each handler that began was cancelled (on a loaded machine one may be cancelled
        // before its body starts, and then never runs at all); none ran to its end.
        let ended = await eventually {
            server.runningHandlerCount == 0 && tally.withLock { $0.started > 0 && $0.cancelled == $0.started }
        }
        XCTAssertTrue(ended, "\(tally.withLock { $0 })")
        XCTAssertEqual(tally.withLock { $0.finished }, 0)
        XCTAssertEqual(server.watchedDeadlineCount, 0)
        // No second answer for any of them.
        XCTAssertNil(try raw.readFrame(timeoutMilliseconds: 200))
    }

    /// A peer that reuses a msgid still running (the protocol forbids it) cannot leave the
    /// first handler where neither a cancel nor the connection's end reaches it.
    func testAReusedMsgidStillEndsWithItsConnection() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1))
        let tally = Locked((started: 0, cancelled: 0))
        try server.register(RPCMethod<Int, Int>("Test.Wait")) { ms, _ in
            tally.withLock { $0.started += 1 }
            do { try await Task.sleep(for: .milliseconds(ms)) } catch { tally.withLock { $0.cancelled += 1 }; throw error }
            return ms
        }
        let port = try server.start()
        defer { server.stop() }
        let raw = try RawConnection(port: port)
        // [0, 7, "Test.Wait", [10000]] then [0, 7, "Test.Wait", [0]]
        let wait = [0xa9] + Array("Test.Wait".utf8)
        try raw.send(frame: [0x94, 0x00, 0x07] + wait + [0x91, 0xcd, 0x27, 0x10])
        let first = await eventually { server.runningHandlerCount == 1 && tally.withLock { $0.started } == 1 }
        XCTAssertTrue(first)
        try raw.send(frame: [0x94, 0x00, 0x07] + wait + [0x91, 0x00])
        XCTAssertNotNil(try raw.readFrame(timeoutMilliseconds: 5000)) // the second's reply
        XCTAssertEqual(server.runningHandlerCount, 1)
        raw.reset()
        let ended = await eventually { server.runningHandlerCount == 0 }
        XCTAssertTrue(ended, "the first handler outlived its connection")
        XCTAssertEqual(tally.withLock { $0.cancelled }, 1)
    }

    /// A deadline too far to represent is no deadline (it used to wrap round to "now" and
    /// answer 4 at once for rpc-timeout-us = 2^64 - 1).
    func testAHugeDeadlineIsNoDeadline() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1))
        try server.register(RPCMethod<Int, Int>("Test.Wait")) { ms, _ in
            try await Task.sleep(for: .milliseconds(ms))
            return ms
        }
        let port = try server.start()
        defer { server.stop() }
        let raw = try RawConnection(port: port)
        defer { raw.close() }
        // [0, 1, "Test.Wait", [50], {"rpc-timeout-us": 2^64 - 1}]
        try raw.send(frame: [0x95, 0x00, 0x01, 0xa9] + Array("Test.Wait".utf8) + [0x91, 0x32, 0x81, 0xae]
                     + Array("rpc-timeout-us".utf8) + [0xcf] + [UInt8](repeating: 0xff, count: 8))
        let reply = try XCTUnwrap(raw.readFrame(timeoutMilliseconds: 5000))
        XCTAssertEqual(reply, [0x94, 0x01, 0x01, 0xc0, 0x32], "[1, 1, nil, 50]")
        XCTAssertEqual(server.watchedDeadlineCount, 0)
    }

    /// After an orderly end (the client half-closed once its calls were answered) the
    /// notifications it sent run to their end, within the drain time; after a reset they
    /// are cancelled at once.
    func testNotificationsOfAnOrderlyEndFinishAndOfAResetStop() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1, drainTimeout: .seconds(5)))
        let tally = Locked((started: 0, finished: 0, cancelled: 0))
        try server.register(RPCMethod<Int, Bool>("Test.Note")) { ms, _ in
            tally.withLock { $0.started += 1 }
            do { try await Task.sleep(for: .milliseconds(ms)) } catch { tally.withLock { $0.cancelled += 1 }; throw error }
            tally.withLock { $0.finished += 1 }
            return true
        }
        let port = try server.start()
        defer { server.stop() }
        let note = [0x93, 0x02, 0xa9] + Array("Test.Note".utf8) + [0x91, 0xcc, 200] // [2, "Test.Note", [200]]
        let polite = try RawConnection(port: port)
        for _ in 0..<3 { try polite.send(frame: note) }
        let running = await eventually { server.runningNotificationCount == 3 && tally.withLock { $0.started } == 3 }
        XCTAssertTrue(running)
        polite.shutdownWrite()
        let finished = await eventually { tally.withLock { $0.finished } == 3 }
        XCTAssertTrue(finished, "\(tally.withLock { $0 })")
        XCTAssertNil(try polite.readFrame(timeoutMilliseconds: 2000)) // then the server closes
        polite.close()

        let rude = try RawConnection(port: port)
        for _ in 0..<3 { try rude.send(frame: [0x93, 0x02, 0xa9] + Array("Test.Note".utf8) + [0x91, 0xcd, 0x27, 0x10]) }
        let rudeRunning = await eventually { server.runningNotificationCount == 3 && tally.withLock { $0.started } == 6 }
        XCTAssertTrue(rudeRunning)
        rude.reset()
        let stopped = await eventually { tally.withLock { $0.cancelled } == 3 && server.runningNotificationCount == 0 }
        XCTAssertTrue(stopped, "\(tally.withLock { $0 }), \(server.runningNotificationCount) running")
    }

    /// Notification handlers end with their connection, within the drain time of its
    /// orderly end (they used to outlive it for good, so closing and reconnecting got round
    /// the per-connection limit).
    func testNotificationHandlersAreCancelledWhenTheirConnectionCloses() async throws {
        try requireEventLoop()
        let server = RPCServer(configuration: .init(loops: 1, drainTimeout: .milliseconds(300)))
        let tally = Locked((started: 0, cancelled: 0))
        try server.register(RPCMethod<Int, Bool>("Test.Sleepy")) { _, _ in
            tally.withLock { $0.started += 1 }
            do { try await Task.sleep(for: .seconds(60)) } catch { tally.withLock { $0.cancelled += 1 } }
            return true
        }
        let port = try server.start()
        defer { server.stop() }
        for round in 1...4 {
            let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
            for i in 0..<8 { try client.notify("Test.Sleepy", i) }
            _ = try await client.call("rpc.ping", [Int](), as: Int?.self)
            // Every handler has begun (a task cancelled before its body starts never runs
            // the handler: on a loaded machine that made the counts below short).
            let running = await eventually {
                server.runningNotificationCount == 8 && tally.withLock { $0.started } == 8 * round
            }
            XCTAssertTrue(running)
            client.close()
            let gone = await eventually { server.runningNotificationCount == 0 }
            XCTAssertTrue(gone, "\(server.runningNotificationCount) notification handlers outlived their connection")
        }
        XCTAssertEqual(tally.withLock { $0.started }, 32)
        // A handler past its grace leaves the table first and sees its cancellation just
        // after (slow under the sanitizers): wait for the last round's.
        let allCancelled = await eventually { tally.withLock { $0.cancelled } == 32 }
        XCTAssertTrue(allCancelled, "\(tally.withLock { $0 })")
    }

    /// Many connections together run no more notification handlers than the server allows.
    func testNotificationHandlersAreBoundedPerServer() async throws {
        try requireEventLoop()
        var configuration = RPCServer.Configuration(loops: 1, drainTimeout: .milliseconds(300))
        configuration.maxRunningNotifications = 6
        let server = RPCServer(configuration: configuration)
        let started = Locked(0)
        try server.register(RPCMethod<Int, Bool>("Test.Sleepy")) { _, _ in
            started.withLock { $0 += 1 }
            try? await Task.sleep(for: .seconds(60))
            return true
        }
        let port = try server.start()
        defer { server.stop() }
        var clients: [RPCClient] = []
        for _ in 0..<3 {
            let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
            for i in 0..<4 { try client.notify("Test.Sleepy", i) }
            _ = try await client.call("rpc.ping", [Int](), as: Int?.self)
            clients.append(client)
        }
        let six = await eventually { started.withLock { $0 } == 6 }
        XCTAssertTrue(six)
        try await Task.sleep(for: .milliseconds(100))
        XCTAssertEqual(started.withLock { $0 }, 6, "12 sent over 3 connections, 6 allowed")
        XCTAssertEqual(server.runningNotificationCount, 6)
        for client in clients { client.close() }
        let gone = await eventually { server.runningNotificationCount == 0 }
        XCTAssertTrue(gone)
    }
}

/// A plain TCP connection for frames the client would never send the way a test needs.
final class RawConnection {
    private let fd: Int32
    private var buffered: [UInt8] = []

    /// A connection accepted elsewhere (the peer's side of a client's connection).
    init(descriptor: Int32) { fd = descriptor }

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw RPCError(.unavailable, "connect failed: errno \(errno)") }
    }

    func send(frame body: [UInt8]) throws {
        let n = UInt32(body.count)
        let bytes = [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + body
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw RPCError(.unavailable, "short send") }
    }

    /// The next frame's body, or nil when none comes within the timeout (or the peer closed).
    func readFrame(timeoutMilliseconds: Int32) throws -> [UInt8]? {
        while true {
            if buffered.count >= 4 {
                let n = Int(buffered[0]) << 24 | Int(buffered[1]) << 16 | Int(buffered[2]) << 8 | Int(buffered[3])
                if buffered.count >= 4 + n {
                    let body = Array(buffered[4..<4 + n])
                    buffered.removeFirst(4 + n)
                    return body
                }
            }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, timeoutMilliseconds) == 1 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard got > 0 else { return nil }
            buffered += chunk.prefix(got)
        }
    }

    func close() { Glibc.close(fd) }

    /// Ends our sending side (the server sees end of input).
    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Closes with a reset (SO_LINGER 0): the server sees the connection lost.
    func reset() {
        var off = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, socklen_t(MemoryLayout<linger>.size))
        Glibc.close(fd)
    }
}
