import Foundation
import RPCExamples
import XCTest

@testable import SwiftRPC

/// Streams through the Swift API: the three kinds, each end of a stream's life on each side
/// (normal end, handler throws, client cancels, deadline, connection dropped, server
/// shutdown draining it), credit holding a slow consumer to its window, metadata, a stalled
/// stream beside calls, and a mix of thousands of streams and calls that leaves nothing behind.
final class StreamTests: XCTestCase {
    enum Test {
        static let ticks = RPCServerStreamMethod<Int, Int>("Test.Ticks")        // sends 0..<n
        static let forever = RPCServerStreamMethod<RPCNoArguments, Int>("Test.Forever")
        static let failing = RPCServerStreamMethod<Int, Int>("Test.Failing")     // n elements, then throws
        static let sum = RPCClientStreamMethod<String, Int, String>("Test.Sum")
        static let chat = RPCBidiStreamMethod<RPCNoArguments, String, String>("Test.Chat")
    }

    /// What the test server's handlers saw, for the assertions.
    final class Seen: @unchecked Sendable {
        let written = Locked(0)          // Test.Forever: elements written so far
        let cancelled = Locked(0)        // handlers that saw their stream end under them
        let metadata = Locked<String?>(nil)
    }

    private func startServer(_ seen: Seen, window: RPCStreamWindow = .standard) throws -> (RPCServer, Int) {
        var configuration = RPCServer.Configuration(loops: 1)
        configuration.streamWindow = window
        let server = RPCServer(configuration: configuration)
        try registerReferenceServices(on: server)
        try server.register(Test.ticks) { n, writer, context in
            context.responseMetadata["lead"] = "L"
            for i in 0..<n { try await writer.write(i) }
            context.responseMetadata["trail"] = "T"
        }
        try server.register(Test.forever) { _, writer, _ in
            do {
                var i = 0
                while true {
                    try await writer.write(i)
                    i += 1
                    seen.written.withLock { $0 = i }
                }
            } catch {
                seen.cancelled.withLock { $0 += 1 }
                throw error
            }
        }
        try server.register(Test.failing) { n, writer, _ in
            for i in 0..<n { try await writer.write(i) }
            throw RPCError(.failedPrecondition, "no more for you")
        }
        try server.register(Test.sum) { label, numbers, context in
            seen.metadata.withLock { $0 = context.metadata["who"] }
            var total = 0
            for try await n in numbers { total += n }
            return "\(label)=\(total)"
        }
        try server.register(Test.chat) { _, inbound, writer, _ in
            var count = 0
            for try await line in inbound {
                count += 1
                try await writer.write(line.uppercased())
            }
            // The client has half-closed: the server still sends.
            try await writer.write("bye after \(count)")
            try await writer.write("really bye")
        }
        return (server, try server.start())
    }

    func testServerStreamDeliversEveryElementInOrderWithMetadata() async throws {
        try requireEventLoop()
        let (server, port) = try startServer(Seen())
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }

        let stream = try await client.serverStream(Test.ticks, 1000, options: .init(window: .init(messages: 4, bytes: 1 << 20)))
        var got: [Int] = []
        for try await i in stream { got.append(i) }
        XCTAssertEqual(got, Array(0..<1000))
        XCTAssertEqual(stream.leadingMetadata?["lead"], "L")
        XCTAssertEqual(stream.trailingMetadata?["trail"], "T")

        // The reference stream: count elements of `size` bytes, each starting with its index.
        var count = 0
        for try await element in try await client.serverStream(Bench.stream, [300, 64]) {
            XCTAssertEqual(element.count, 64)
            XCTAssertEqual(Int(element[2]) << 8 | Int(element[3]), count)
            count += 1
        }
        XCTAssertEqual(count, 300)
        let empty = try await client.serverStream(Test.ticks, 0)
        for try await _ in empty { XCTFail("no element expected") }
    }

    func testClientAndBidiStreams() async throws {
        try requireEventLoop()
        let seen = Seen()
        let (server, port) = try startServer(seen, window: .init(messages: 2, bytes: 64))
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }

        // A window of two elements paces 500 writes.
        let reply = try await client.clientStream(Test.sum, "total", options: .init(metadata: ["who": "me"])) { writer in
            for i in 1...500 { try await writer.write(i) }
        }
        XCTAssertEqual(reply, "total=125250")
        XCTAssertEqual(seen.metadata.withLock { $0 }, "me")

        let upload = try await client.clientStream(Bench.upload, RPCNoArguments()) { writer in
            for _ in 0..<50 { try await writer.write([UInt8](repeating: 7, count: 1000)) }
        }
        XCTAssertEqual(upload, Bench.UploadSummary(count: 50, bytes: 50_000))

        let lines = try await client.bidiStream(Test.chat, RPCNoArguments()) { writer, inbound in
            var echoed: [String] = []
            var iterator = inbound.makeAsyncIterator()
            for word in ["a", "b", "c"] {
                try await writer.write(word)
                echoed.append(try await iterator.next()!)
            }
            return echoed
        }
        XCTAssertEqual(lines, ["A", "B", "C"])

        // Half-closed by the client, the server goes on sending: everything arrives.
        let client2 = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client2.close() }
        let all = try await client2.bidiStream(Test.chat, RPCNoArguments()) { writer, inbound in
            try await writer.write("x")
            writer.finish()
            do {
                try await writer.write("y")
                XCTFail("a write after finish() should throw")
            } catch {}
            var lines: [String] = []
            for try await line in inbound { lines.append(line) }
            return lines
        }
        XCTAssertEqual(all, ["X", "bye after 1", "really bye"])
        let echoed = try await client.bidiStream(Bench.echoStream, RPCNoArguments()) { writer, inbound in
            var iterator = inbound.makeAsyncIterator()
            try await writer.write(RPCEncodedValue(bytes: [0x93, 0x01, 0xa1, 0x78, 0xc3])) // [1, "x", true]
            return try await iterator.next()?.bytes
        }
        XCTAssertEqual(echoed, [0x93, 0x01, 0xa1, 0x78, 0xc3])
    }

    func testEndsOfAStreamsLife() async throws {
        try requireEventLoop()
        let seen = Seen()
        let (server, port) = try startServer(seen)
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }

        // The handler throws: the elements before it arrive, then its status.
        var before = 0
        do {
            for try await _ in try await client.serverStream(Test.failing, 3) { before += 1 }
            XCTFail("the stream should have failed")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .failedPrecondition)
            XCTAssertEqual(error.message, "no more for you")
        }
        XCTAssertEqual(before, 3)

        // The client leaves the loop: the stream is cancelled and the handler with it.
        for try await i in try await client.serverStream(Test.forever, RPCNoArguments()) where i == 5 { break }
        let cancelledOnLeaving = await eventually { seen.cancelled.withLock { $0 } == 1 }
        XCTAssertTrue(cancelledOnLeaving)

        // The deadline passes mid-stream.
        do {
            for try await _ in try await client.serverStream(Test.forever, RPCNoArguments(), options: .init(timeout: .milliseconds(200))) {
                try await Task.sleep(for: .milliseconds(1))
            }
            XCTFail("the deadline should have ended the stream")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .deadlineExceeded)
        }
        let cancelledByDeadline = await eventually { seen.cancelled.withLock { $0 } == 2 }
        XCTAssertTrue(cancelledByDeadline)

        // The connection drops mid-stream: the client's loop throws, the handler stops.
        do { // (the stream's objects go at the end of this scope)
            let doomed = try await RPCClient.connect(host: "127.0.0.1", port: port)
            let stream = try await doomed.serverStream(Test.forever, RPCNoArguments())
            var iterator = stream.makeAsyncIterator()
            _ = try await iterator.next()
            doomed.close()
            do {
                while try await iterator.next() != nil {}
                XCTFail("a lost connection should end the stream with an error")
            } catch let error as RPCError {
                XCTAssertEqual(error.code, .unavailable)
            }
        }
        let cancelledByDrop = await eventually { seen.cancelled.withLock { $0 } == 3 }
        XCTAssertTrue(cancelledByDrop)

        // A writer whose task is cancelled gives the stream up.
        let task = Task {
            try await client.clientStream(Test.sum, "t") { writer in
                while true { try await writer.write(1) }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        do {
            _ = try await task.value
            XCTFail("a cancelled task's stream should fail")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .cancelled)
        }

        // Unknown stream methods, and bad opening arguments.
        do {
            for try await _ in try await client.serverStream(RPCServerStreamMethod<Int, Int>("Test.Nope"), 1) {}
            XCTFail("an unknown stream should fail")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unimplemented)
        }
        do {
            for try await _ in try await client.serverStream(RPCServerStreamMethod<String, Int>("Test.Ticks"), "x") {}
            XCTFail("bad arguments should fail")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .invalidArgument)
        }
        // A call method opened as a stream, and a stream method called as a call.
        do {
            for try await _ in try await client.serverStream(RPCServerStreamMethod<Int, Int>("Arith.Multiply"), 1) {}
            XCTFail("a call is not a stream")
        } catch let error as RPCError {
            XCTAssertEqual(error.code, .unimplemented)
        }
        let methods = try await client.call(RPCBuiltins.methods, nil)
        XCTAssertTrue(methods.contains("Bench.Stream") && methods.contains("Test.Chat"))
        await assertNothingLeft(server, client)
    }

    func testShutdownDrainsAnOpenStream() async throws {
        try requireEventLoop()
        let (server, port) = try startServer(Seen())
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }
        let stream = try await client.serverStream(Test.ticks, 200, options: .init(window: .init(messages: 1, bytes: 1 << 20)))
        var iterator = stream.makeAsyncIterator()
        var got = [try await iterator.next()!]
        let shutdown = Task { await server.shutdown(drainTimeout: .seconds(10)) }
        // The server drains: a new stream is refused, the open one runs to its end.
        var refusedNew = false
        for _ in 0..<200 where !refusedNew {
            do {
                for try await _ in try await client.serverStream(Test.ticks, 1) {}
                try await Task.sleep(for: .milliseconds(5))
            } catch let error as RPCError {
                refusedNew = error.code == .unavailable
            }
        }
        XCTAssertTrue(refusedNew)
        while let i = try await iterator.next() { got.append(i) }
        XCTAssertEqual(got, Array(0..<200))
        let drained = await shutdown.value
        XCTAssertTrue(drained)
    }

    func testStalledStreamLeavesCallsAndTheWindowAlone() async throws {
        try requireEventLoop()
        let seen = Seen()
        let (server, port) = try startServer(seen)
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }
        let window = RPCStreamWindow(messages: 8, bytes: 1 << 20)
        let stream = try await client.serverStream(Test.forever, RPCNoArguments(), options: .init(window: window))
        var iterator = stream.makeAsyncIterator()
        _ = try await iterator.next()
        // Nobody takes more: the server is held to the window, and calls go on being answered.
        for i in 0..<200 {
            let product = try await client.call(Arith.multiply, ArithArgs(A: i, B: 3))
            XCTAssertEqual(product, 3 * i)
        }
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertLessThanOrEqual(seen.written.withLock { $0 }, window.messages + 1)
        XCTAssertLessThanOrEqual(stream.call.channel.buffered, window.messages)
        // Taking elements grants credit again: the stream moves on. A consumer that keeps
        // a little behind (the producer refills as it takes) holds no more than its window,
        // taken elements included: they are let go as it goes.
        var mostHeld = 0
        for _ in 0..<300 {
            _ = try await iterator.next()
            try await Task.sleep(for: .microseconds(300)) // the producer refills meanwhile
            mostHeld = max(mostHeld, stream.call.channel.held)
        }
        XCTAssertGreaterThanOrEqual(seen.written.withLock { $0 }, 300)
        XCTAssertLessThanOrEqual(mostHeld, 2 * window.messages + 16, "taken elements must not pile up")
        stream.cancel()
    }

    /// Interceptors see each stream as one call (its open, then its end with its status) on
    /// both sides, may refuse one, and `rpc.stats` counts streams.
    func testInterceptorsAndStatisticsSeeStreams() async throws {
        try requireEventLoop()
        struct Record: RPCServerInterceptor {
            let seen: Locked<[String]>
            func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
                if context.method == "Test.Forever" { throw RPCError(.unauthenticated, "not you") }
                seen.withLock { $0.append("open \(context.method)") }
                do {
                    let reply = try await next(context)
                    seen.withLock { $0.append("end \(context.method) ok") }
                    return reply
                } catch let error as RPCError {
                    seen.withLock { $0.append("end \(context.method) \(error.code)") }
                    throw error
                }
            }
        }
        struct ClientRecord: RPCClientInterceptor {
            let seen: Locked<[String]>
            func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
                var call = call
                call.metadata["who"] = "interceptor"
                do {
                    let reply = try await next(call)
                    seen.withLock { $0.append("\(call.method) ok") }
                    return reply
                } catch let error as RPCError {
                    seen.withLock { $0.append("\(call.method) \(error.code)") }
                    throw error
                }
            }
        }
        let serverSeen = Locked<[String]>([]), clientSeen = Locked<[String]>([])
        var configuration = RPCServer.Configuration(loops: 1, interceptors: [Record(seen: serverSeen)])
        configuration.methodStatistics = true
        let server = RPCServer(configuration: configuration)
        let seen = Seen()
        try server.register(Test.ticks) { n, writer, _ in for i in 0..<n { try await writer.write(i) } }
        try server.register(Test.failing) { n, writer, _ in
            for i in 0..<n { try await writer.write(i) }
            throw RPCError(.failedPrecondition, "no more for you")
        }
        try server.register(Test.forever) { _, _, _ in XCTFail("refused by the interceptor") }
        try server.register(Test.sum) { label, numbers, context in
            seen.metadata.withLock { $0 = context.metadata["who"] }
            var total = 0
            for try await n in numbers { total += n }
            return "\(label)=\(total)"
        }
        let port = try server.start()
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port, configuration: .init(
            interceptors: [ClientRecord(seen: clientSeen)]))
        defer { client.close() }

        var n = 0
        for try await _ in try await client.serverStream(Test.ticks, 3) { n += 1 }
        XCTAssertEqual(n, 3)
        do {
            for try await _ in try await client.serverStream(Test.failing, 1) {}
            XCTFail("expected the handler's error")
        } catch let error as RPCError { XCTAssertEqual(error.code, .failedPrecondition) }
        do {
            for try await _ in try await client.serverStream(Test.forever, RPCNoArguments()) {}
            XCTFail("expected the interceptor's refusal")
        } catch let error as RPCError { XCTAssertEqual(error.code, .unauthenticated) }
        let sum = try await client.clientStream(Test.sum, "s") { writer in try await writer.write(2) }
        XCTAssertEqual(sum, "s=2")
        XCTAssertEqual(seen.metadata.withLock { $0 }, "interceptor") // the client chain's metadata

        let ended = await eventually { serverSeen.withLock { $0.count } == 6 && clientSeen.withLock { $0.count } == 4 }
        XCTAssertTrue(ended, "server saw \(serverSeen.withLock { $0 }), client \(clientSeen.withLock { $0 })")
        XCTAssertEqual(Set(serverSeen.withLock { $0 }), ["open Test.Ticks", "end Test.Ticks ok", "open Test.Failing",
                                                         "end Test.Failing failed precondition", "open Test.Sum",
                                                         "end Test.Sum ok"])
        XCTAssertEqual(Set(clientSeen.withLock { $0 }), ["Test.Ticks ok", "Test.Failing failed precondition",
                                                         "Test.Forever unauthenticated", "Test.Sum ok"])
        let stats = try await client.call(RPCBuiltins.stats, nil)
        let ticks = stats.first { $0.method == "Test.Ticks" }
        XCTAssertEqual(ticks?.calls, 1)
        XCTAssertEqual(stats.first { $0.method == "Test.Forever" }?.errors, 1)
    }

    /// Thousands of streams of every kind, ending every way, mixed with calls: each ends
    /// once, and nothing is left on either side.
    func testNothingLeaksAfterThousandsOfStreamsAndCalls() async throws {
        try requireEventLoop()
        let (server, port) = try startServer(Seen())
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        let outcomes = Locked([String: Int]())
        @Sendable func tally(_ kind: String) { outcomes.withLock { $0[kind, default: 0] += 1 } }
        let total = 2000
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<total {
                group.addTask {
                    do {
                        switch i % 5 {
                        case 0:
                            var n = 0
                            for try await _ in try await client.serverStream(Test.ticks, 20) { n += 1 }
                            tally(n == 20 ? "complete" : "short")
                        case 1:
                            for try await v in try await client.serverStream(Test.forever, RPCNoArguments()) where v == 3 { break }
                            tally("left")
                        case 2:
                            for try await _ in try await client.serverStream(Test.forever, RPCNoArguments(),
                                                                       options: .init(timeout: .milliseconds(20))) {}
                            tally("no deadline")
                        case 3:
                            let r = try await client.clientStream(Test.sum, "s") { w in for k in 0..<10 { try await w.write(k) } }
                            tally(r == "s=45" ? "complete" : "wrong")
                        default:
                            let p = try await client.call(Arith.multiply, ArithArgs(A: i, B: 2))
                            tally(p == 2 * i ? "call" : "wrong")
                        }
                    } catch let error as RPCError {
                        tally("\(error.code)")
                    }
                }
                if i % 200 == 199 { try await group.waitForAll() }
            }
            try await group.waitForAll()
        }
        let tallied = outcomes.withLock { $0 }
        XCTAssertEqual(tallied["complete"], total * 2 / 5)
        XCTAssertEqual(tallied["left"], total / 5)
        XCTAssertEqual(tallied["deadline exceeded"], total / 5)
        XCTAssertEqual(tallied["call"], total / 5)
        await assertNothingLeft(server, client)
        client.close()
    }

    /// No stream left on either side: no pending slot, nothing in flight, no stream object.
    private func assertNothingLeft(_ server: RPCServer, _ client: RPCClient, file: StaticString = #filePath,
                                   line: UInt = #line) async {
        let clean = await eventually(10) {
            client.pendingCount == 0 && server.statistics.requestsInFlight == 0 &&
                ServerStream.alive.load(ordering: .relaxed) == 0 && ClientStreamCall.alive.load(ordering: .relaxed) == 0
        }
        XCTAssertTrue(clean, "left: \(client.pendingCount) pending, \(server.statistics.requestsInFlight) in flight, "
                      + "\(ServerStream.alive.load(ordering: .relaxed)) server and "
                      + "\(ClientStreamCall.alive.load(ordering: .relaxed)) client streams", file: file, line: line)
    }
}
