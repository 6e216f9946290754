import RPCExamples
import XCTest

@testable import SwiftRPC

/// A real server and client over io_uring on loopback.
final class ServerClientTests: XCTestCase {
    private var server: RPCServer!
    private var client: RPCClient!

    static let sleepy = RPCMethod<Int, Int>("Test.Sleepy")
    static let fail = RPCMethod<String, Int>("Test.Fail")
    static let hold = RPCMethod<Int, Int>("Test.Hold")
    static let noted = Locked<[String]>([])
    static let longInline = RPCMethod<Int, String>("LongServiceName.InlineMethodName")
    static let longAsync = RPCMethod<Int, String>("LongServiceName.AsyncMethodName")

    struct Plain: Error, CustomStringConvertible { var description: String { "plain failure" } }

    override func setUp() async throws {
        try requireEventLoop()
        server = RPCServer(configuration: .init(loops: 2))
        try registerReferenceServices(on: server)
        // Replies in the reverse order of arrival: bigger numbers sleep less.
        try server.register(Self.sleepy) { n, _ in
            try await Task.sleep(for: .milliseconds(20 - n % 20))
            return n * 2
        }
        try server.register(Self.fail) { kind, _ in
            if kind == "rpc" { throw RPCError(.unauthenticated, "who are you") }
            throw Plain()
        }
        try server.register(Self.hold) { _, _ in
            try await Task.sleep(for: .seconds(30))
            return 0
        }
        try server.register(RPCMethod<String, Bool>("Test.Note")) { text, _ in
            Self.noted.withLock { $0.append(text) }
            return true
        }
        try server.register(RPCMethod<Int, Int>("Test.Meta")) { n, context in
            context.responseMetadata["seen"] = context.metadata["trace"] ?? "none"
            context.responseMetadata.set("raw", bytes: [1, 2, 3])
            return n
        }
        try server.registerInline(RPCMethod<Int, Int>("Test.MetaInline")) { n, context in
            if n == 1 { context.responseMetadata["inline"] = "yes" }
            return n
        }
        // Names past 15 bytes are heap strings (shorter ones are stored inline): the context
        // must still carry them intact, on the inline path and the task path.
        try server.registerInline(Self.longInline) { _, context in context.method }
        try server.register(Self.longAsync) { _, context in context.method }
        try server.registerRaw("Test.RawLength") { params, _ in
            [UInt8(truncatingIfNeeded: params.count)] // a positive fixint
        }
        let port = try server.start()
        client = try await RPCClient.connect(host: "127.0.0.1", port: port)
    }

    override func tearDown() async throws {
        client?.close()
        server?.stop()
    }

    func testTypedCallsAndErrors() async throws {
        let product = try await client.call(Arith.multiply, ArithArgs(A: 7, B: 6))
        XCTAssertEqual(product, 42)
        let q = try await client.call(Arith.divide, ArithArgs(A: 7, B: 2))
        XCTAssertEqual(q, Quotient(Quo: 3, Rem: 1))
        await assertFails(code: .unknown, message: "divide by zero") {
            _ = try await self.client.call(Arith.divide, ArithArgs(A: 1, B: 0))
        }
        await assertFails(code: .unimplemented) {
            _ = try await self.client.call("No.Such", 1, as: Int.self)
        }
        await assertFails(code: .invalidArgument) {
            _ = try await self.client.call("Arith.Multiply", "not a map", as: Int.self)
        }
        await assertFails(code: .unauthenticated, message: "who are you") {
            _ = try await self.client.call(Self.fail, "rpc")
        }
        await assertFails(code: .unknown, message: "plain failure") {
            _ = try await self.client.call(Self.fail, "plain")
        }
        // Every failure above kept the connection open.
        XCTAssertTrue(client.isConnected)
        let got1 = try await client.call(Arith.multiply, ArithArgs(A: -3, B: 3))
        XCTAssertEqual(got1, -9)
    }

    func testHandlersSeeTheirLongMethodNames() async throws {
        for _ in 0..<3 { // the names are read from the registered handler on every request
            let inline = try await client.call(Self.longInline, 0)
            XCTAssertEqual(inline, Self.longInline.name)
            let async = try await client.call(Self.longAsync, 0)
            XCTAssertEqual(async, Self.longAsync.name)
        }
    }

    func testBuiltInsAndEcho() async throws {
        let methods = try await client.call("rpc.methods", [Int](), as: [String].self)
        XCTAssertTrue(methods.contains("Arith.Multiply") && methods.contains("Bench.Echo") && methods.contains("rpc.ping"))
        let pong = try await client.call("rpc.ping", [Int](), as: Int?.self)
        XCTAssertNil(pong)
        let bytes: [UInt8] = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        let got2 = try await client.call(Bench.echo, bytes)
        XCTAssertEqual(got2, bytes)
        let got3 = try await client.call("Bench.Echo", ["a": [1, 2]], as: [String: [Int]].self)
        XCTAssertEqual(got3, ["a": [1, 2]])
        let rawLength = try await client.call("Test.RawLength", 5, as: Int.self)
        XCTAssertEqual(rawLength, 2) // the params [5] are 2 bytes
    }

    /// Scalar replies are read straight from the tree; one of the wrong type still ends the
    /// call with code 13 naming the type, and the connection stays usable.
    func testScalarReplyOfTheWrongTypeIsAnError() async throws {
        func expectMismatch<Reply: Codable & Sendable>(_ args: some Codable & Sendable, as: Reply.Type) async {
            do {
                let got = try await client.call("Bench.Echo", args, as: Reply.self)
                XCTFail("decoded \(got) as \(Reply.self)")
            } catch {
                XCTAssertEqual(error.code, .internal, "\(error)")
                XCTAssertTrue(error.message.hasPrefix("the reply does not decode as \(Reply.self)"), error.message)
            }
        }
        await expectMismatch(7, as: String.self)
        await expectMismatch("text", as: [UInt8].self)
        await expectMismatch(300, as: UInt8.self)
        let text = try await client.call("Bench.Echo", "text", as: String.self)
        XCTAssertEqual(text, "text")
    }

    func testRequestAndResponseMetadata() async throws {
        let traced = try await client.callWithMetadata(RPCMethod<Int, Int>("Test.Meta"), 5, metadata: ["trace": "t-1"])
        XCTAssertEqual(traced.value, 5)
        XCTAssertEqual(traced.metadata["seen"], "t-1")
        XCTAssertEqual(traced.metadata.entries["raw"], .bytes([1, 2, 3]))
        let untraced = try await client.callWithMetadata(RPCMethod<Int, Int>("Test.Meta"), 6)
        XCTAssertEqual(untraced.metadata["seen"], "none")
        // Inline handlers share a box per loop: what one request set never leaks into the next.
        let first = try await client.callWithMetadata(RPCMethod<Int, Int>("Test.MetaInline"), 1)
        XCTAssertEqual(first.metadata["inline"], "yes")
        let second = try await client.callWithMetadata(RPCMethod<Int, Int>("Test.MetaInline"), 2)
        XCTAssertTrue(second.metadata.isEmpty)
    }

    func testManyConcurrentCallsReplyInAnyOrder() async throws {
        let client = self.client!
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for n in 0..<500 {
                group.addTask { (n, try await client.call(Self.sleepy, n)) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        XCTAssertEqual(results.count, 500)
        for (n, doubled) in results { XCTAssertEqual(doubled, n * 2) }
        XCTAssertEqual(client.pendingCount, 0)
    }

    func testCallbackAPI() async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: Result<Int, RPCError>.self)
        for n in 0..<100 {
            client.go(Arith.multiply, ArithArgs(A: n, B: 3)) { continuation.yield($0) }
        }
        var seen = 0
        for await result in stream {
            guard case .success(let v) = result else { return XCTFail("\(result)") }
            XCTAssertEqual(v % 3, 0)
            seen += 1
            if seen == 100 { break }
        }
        // A call that cannot be sent at all ends at once, on the calling thread.
        client.close()
        let immediate = Locked<Result<Int, RPCError>?>(nil)
        client.go(Arith.multiply, ArithArgs(A: 1, B: 1)) { r in immediate.withLock { $0 = r } }
        guard case .failure(let e)? = immediate.withLock({ $0 }) else { return XCTFail("did not fail at once") }
        XCTAssertEqual(e.code, .unavailable)
    }

    func testTasksPreferringTheLoopRunOnItAndCallWithoutAHop() async throws {
        let loop = try RPCEventLoop()
        let client = try await RPCClient.connect(host: "127.0.0.1", port: server.port!,
                                                 configuration: .init(eventLoop: loop))
        let (onLoop, product) = try await Task(executorPreference: loop) { () async throws -> (Bool, Int) in
            let before = loop.isCurrent
            let product = try await client.call(Arith.multiply, ArithArgs(A: 6, B: 7))
            return (before && loop.isCurrent, product)
        }.value
        XCTAssertTrue(onLoop)
        XCTAssertEqual(product, 42)
        XCTAssertGreaterThan(loop.iterationNanoseconds, 0)
        client.close()
    }

    func testNotificationIsDelivered() async throws {
        try client.notify("Test.Note", "hello")
        let delivered = await eventually { Self.noted.withLock { $0.contains("hello") } }
        XCTAssertTrue(delivered)
    }

    func testCancellingTheAwaitingTaskCancelsTheCall() async throws {
        let client = self.client!
        let task = Task.detached { await ServerClientTests.callHold(client) }
        let started = await eventually { client.pendingCount == 1 }
        XCTAssertTrue(started)
        task.cancel()
        guard case .failure(let error) = await task.value else { return XCTFail("expected cancellation") }
        XCTAssertEqual(error.code, .cancelled)
        XCTAssertEqual(client.pendingCount, 0)
        let got4 = try await client.call(Arith.multiply, ArithArgs(A: 2, B: 2))
        XCTAssertEqual(got4, 4)
    }

    func testServerStopFailsPendingCallsOnce() async throws {
        let client = self.client!
        let ended = Locked<[Result<Int, RPCError>]>([])
        for n in 0..<20 {
            client.go(Self.hold, n) { r in ended.withLock { $0.append(r) } }
        }
        let allPending = await eventually { client.pendingCount == 20 }
        XCTAssertTrue(allPending)
        server.stop()
        let allEnded = await eventually { ended.withLock { $0.count } == 20 }
        XCTAssertTrue(allEnded)
        try await Task.sleep(for: .milliseconds(50)) // a second ending would show up now
        let results = ended.withLock { $0 }
        XCTAssertEqual(results.count, 20)
        for r in results {
            guard case .failure(let e) = r else { return XCTFail("\(r)") }
            XCTAssertEqual(e.code, .unavailable)
        }
        XCTAssertFalse(client.isConnected)
        await assertFails(code: .unavailable) { _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) }
    }

    func testRegistrationRules() throws {
        let fresh = RPCServer()
        try fresh.register(Arith.multiply) { a, _ in a.A * a.B }
        func rejects(_ name: String, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
            do {
                try fresh.register(RPCMethod<Int, Int>(name)) { $0 }
                XCTFail("\(name) was accepted", file: file, line: line)
            } catch {
                XCTAssertEqual(error.code, .invalidArgument, file: file, line: line)
                XCTAssertTrue(error.message.contains(fragment), "\(error.message)", file: file, line: line)
            }
        }
        rejects("Arith.Multiply", "already defined")
        rejects("NoDot", "ill-formed")
        rejects(".Method", "no service name")
        rejects("Service.", "no method name")
        rejects("rpc.custom", "reserved")
        // A service registers all of its methods or none.
        struct Clash: RPCService {
            func register(into methods: inout RPCMethodTable) {
                methods.add(RPCMethod<Int, Int>("Clash.Fresh")) { n, _ in n }
                methods.add(Arith.multiply) { a, _ in a.A }
            }
        }
        XCTAssertThrowsError(try fresh.register(Clash()))
        try fresh.register(RPCMethod<Int, Int>("Clash.Fresh")) { n, _ in n } // was not half-added
        _ = try fresh.start()
        XCTAssertThrowsError(try fresh.register(RPCMethod<Int, Int>("Late.Method")) { n, _ in n })
        fresh.stop()
    }

    private static func callHold(_ client: RPCClient) async -> Result<Int, RPCError> {
        do throws(RPCError) { return .success(try await client.call(hold, 1)) } catch { return .failure(error) }
    }

    private func assertFails(code: RPCError.Code, message: String? = nil,
                             file: StaticString = #filePath, line: UInt = #line,
                             _ body: () async throws -> Void) async {
        do {
            try await body()
            XCTFail("expected \(code)", file: file, line: line)
        } catch let error as RPCError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            if let message { XCTAssertEqual(error.message, message, file: file, line: line) }
        } catch {
            XCTFail("unexpected \(error)", file: file, line: line)
        }
    }
}

extension RPCServer {
    /// Test helper: an async handler that ignores its context.
    func register<Args, Reply>(_ method: RPCMethod<Args, Reply>, _ body: @escaping @Sendable (Args) async throws -> Reply) throws(RPCError) {
        try register(method) { args, _ in try await body(args) }
    }
}
