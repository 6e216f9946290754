import RPCExamples
import XCTest

@testable import SwiftRPC

/// Server and client interceptors over a real connection: order, metadata, refusals, and
/// the ready-made token authentication and rate limiting.
final class InterceptorTests: XCTestCase {
    static let whoAmI = RPCMethod<Int, String>("Test.WhoAmI")
    static let whoAmIInline = RPCMethod<Int, String>("Test.WhoAmIInline")
    static let hold = RPCMethod<Int, Int>("Test.Hold")

    private var servers: [RPCServer] = []
    private var clients: [RPCClient] = []

    override func setUp() async throws { try requireEventLoop() }

    override func tearDown() async throws {
        for c in clients { c.close() }
        for s in servers { s.stop() }
    }

    private func serve(_ interceptors: [any RPCServerInterceptor]) throws -> Int {
        let server = RPCServer(configuration: .init(loops: 1, interceptors: interceptors))
        try registerReferenceServices(on: server)
        try server.register(Self.whoAmI) { _, context in
            context.metadata[TokenAuthInterceptor.principalKey] ?? context.metadata["trail"] ?? "-"
        }
        try server.registerInline(Self.whoAmIInline) { _, context in
            context.metadata[TokenAuthInterceptor.principalKey] ?? "-"
        }
        try server.register(Self.hold) { _, _ in
            try await Task.sleep(for: .seconds(30))
            return 0
        }
        servers.append(server)
        return try server.start()
    }

    private func connect(_ port: Int, _ interceptors: [any RPCClientInterceptor] = []) async throws -> RPCClient {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port,
                                                 configuration: .init(interceptors: interceptors))
        clients.append(client)
        return client
    }

    // MARK: Token authentication

    func testTokenAuthRejectsMissingOrWrongTokensWith16AndAcceptsTheRightOne() async throws {
        let port = try serve([TokenAuthInterceptor(tokens: ["s3cret": "alice"], openMethods: ["Arith.Divide"])])
        let anonymous = try await connect(port)
        await expectRPCError(.unauthenticated, message: "rpc: missing authorization token") {
            _ = try await anonymous.call(Self.whoAmI, 1)
        }
        // Inline handlers are guarded too: with interceptors they run after them.
        await expectRPCError(.unauthenticated) { _ = try await anonymous.call(Self.whoAmIInline, 1) }
        await expectRPCError(.unauthenticated, message: "rpc: invalid authorization token") {
            _ = try await anonymous.call(Self.whoAmI, 1, metadata: ["authorization": "Bearer s3cres"])
        }
        await expectRPCError(.unauthenticated) {
            _ = try await anonymous.call(Self.whoAmI, 1, metadata: ["authorization": "Bearer s3cret-and-more"])
        }
        // An open method needs no token; the connection survived every refusal.
        let q = try await anonymous.call(Arith.divide, ArithArgs(A: 7, B: 2))
        XCTAssertEqual(q, Quotient(Quo: 3, Rem: 1))

        let authed = try await connect(port, [MetadataInterceptor(["authorization": "Bearer s3cret"])])
        let principal = try await authed.call(Self.whoAmI, 1)
        XCTAssertEqual(principal, "alice")
        let inlinePrincipal = try await authed.call(Self.whoAmIInline, 1)
        XCTAssertEqual(inlinePrincipal, "alice")
        // A principal the client claims itself is replaced by the token's.
        let forged = try await authed.call(Self.whoAmI, 1, metadata: [TokenAuthInterceptor.principalKey: "root"])
        XCTAssertEqual(forged, "alice")
        // go takes the intercepted path too.
        let viaGo = await withCheckedContinuation { continuation in
            authed.go(Self.whoAmI, 1) { continuation.resume(returning: $0) }
        }
        XCTAssertEqual(try viaGo.get(), "alice")
    }

    func testConstantTimeCompare() {
        XCTAssertTrue(TokenAuthInterceptor.constantTimeEqual("abc", "abc"))
        XCTAssertFalse(TokenAuthInterceptor.constantTimeEqual("abc", "abd"))
        XCTAssertFalse(TokenAuthInterceptor.constantTimeEqual("abc", "abcd"))
        XCTAssertFalse(TokenAuthInterceptor.constantTimeEqual("", "a"))
        // Lengths that differ by a multiple of 256, the rest padded with NULs.
        XCTAssertFalse(TokenAuthInterceptor.constantTimeEqual("abc", "abc" + String(repeating: "\0", count: 256)))
        XCTAssertFalse(TokenAuthInterceptor.constantTimeEqual(String(repeating: "\0", count: 256), ""))
    }

    // MARK: Rate limiting

    func testRateLimiterAnswers8PastItsBudgetAndTheConnectionStaysUsable() async throws {
        let clock = Locked(ContinuousClock.now)
        let limiter = RateLimitInterceptor(callsPerSecond: 1, burst: 3, clock: { clock.withLock { $0 } })
        let port = try serve([limiter])
        let client = try await connect(port)
        for i in 1...3 {
            let product = try await client.call(Arith.multiply, ArithArgs(A: i, B: 2))
            XCTAssertEqual(product, i * 2)
        }
        await expectRPCError(.resourceExhausted) { _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) }
        await expectRPCError(.resourceExhausted) { _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) }
        XCTAssertTrue(client.isConnected)
        // Built-ins are not limited, and the budget is per connection.
        let names = try await client.call(RPCBuiltins.methods, nil)
        XCTAssertTrue(names.contains("Arith.Multiply"))
        let other = try await connect(port)
        let fresh = try await other.call(Arith.multiply, ArithArgs(A: 5, B: 5))
        XCTAssertEqual(fresh, 25)
        // One second later the first connection has one call again, and only one.
        clock.withLock { $0 = $0.advanced(by: .seconds(1)) }
        let again = try await client.call(Arith.multiply, ArithArgs(A: 4, B: 4))
        XCTAssertEqual(again, 16)
        await expectRPCError(.resourceExhausted) { _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) }
        // Closed connections' buckets are dropped.
        XCTAssertEqual(limiter.trackedConnections, 2)
        client.close()
        other.close()
        let forgotten = await eventually { limiter.trackedConnections == 0 }
        XCTAssertTrue(forgotten, "buckets left: \(limiter.trackedConnections)")
    }

    // MARK: Order, metadata, short-circuits

    /// Appends its name to `trail` (metadata the handler sees) and to a shared log, before
    /// and after the rest of the chain.
    struct Tracing: RPCServerInterceptor, RPCClientInterceptor {
        let name: String
        let log: Locked<[String]>

        func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
            log.withLock { $0.append("\(name) in") }
            var context = context
            context.metadata["trail"] = (context.metadata["trail"].map { $0 + "," } ?? "") + name
            defer { log.withLock { $0.append("\(name) out") } }
            return try await next(context)
        }

        func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
            log.withLock { $0.append("\(name) in") }
            var call = call
            call.metadata["trail"] = (call.metadata["trail"].map { $0 + "," } ?? "") + name
            defer { log.withLock { $0.append("\(name) out") } }
            return try await next(call)
        }
    }

    func testInterceptorsRunInOrderAndTheirMetadataReachesTheHandler() async throws {
        let serverLog = Locked<[String]>([])
        let clientLog = Locked<[String]>([])
        let port = try serve([Tracing(name: "s1", log: serverLog), Tracing(name: "s2", log: serverLog)])
        let client = try await connect(port, [Tracing(name: "c1", log: clientLog), Tracing(name: "c2", log: clientLog)])
        let trail = try await client.call(Self.whoAmI, 1)
        XCTAssertEqual(trail, "c1,c2,s1,s2")
        XCTAssertEqual(serverLog.withLock { $0 }, ["s1 in", "s2 in", "s2 out", "s1 out"])
        XCTAssertEqual(clientLog.withLock { $0 }, ["c1 in", "c2 in", "c2 out", "c1 out"])
    }

    struct Refuse: RPCServerInterceptor, RPCClientInterceptor {
        let calls: Locked<Int>
        func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
            throw RPCError(.unavailable, "server says no")
        }
        func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
            calls.withLock { $0 += 1 }
            if call.method == "Arith.Divide" { return RPCClientReply(value: "wrong type") }
            throw RPCError(.unavailable, "client says no")
        }
    }

    func testInterceptorsCanShortCircuit() async throws {
        let refusals = Locked(0)
        let port = try serve([Refuse(calls: refusals)])
        let plain = try await connect(port)
        await expectRPCError(.unavailable, message: "server says no") { _ = try await plain.call(Self.whoAmI, 1) }
        let refused = try await connect(port, [Refuse(calls: refusals)])
        await expectRPCError(.unavailable, message: "client says no") { _ = try await refused.call(Self.whoAmI, 1) }
        // An interceptor answering with a value of the wrong type is a clear error, not a crash.
        await expectRPCError(.internal) { _ = try await refused.call(Arith.divide, ArithArgs(A: 1, B: 1)) }
        XCTAssertEqual(refusals.withLock { $0 }, 2)
    }

    func testResponseMetadataReachesClientInterceptorsAndCallWithMetadata() async throws {
        struct Stamp: RPCServerInterceptor {
            func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
                context.responseMetadata["stamped"] = "yes"
                return try await next(context)
            }
        }
        struct Check: RPCClientInterceptor {
            let seen: Locked<String?>
            func intercept(_ call: RPCClientCall, next: RPCClientInterceptorNext) async throws -> RPCClientReply {
                let reply = try await next(call)
                seen.withLock { $0 = reply.metadata["stamped"] }
                return reply
            }
        }
        let seen = Locked<String?>(nil)
        let port = try serve([Stamp()])
        let client = try await connect(port, [Check(seen: seen)])
        let response = try await client.callWithMetadata(Arith.multiply, ArithArgs(A: 2, B: 3))
        XCTAssertEqual(response.value, 6)
        XCTAssertEqual(response.metadata["stamped"], "yes")
        XCTAssertEqual(seen.withLock { $0 }, "yes")
    }

    func testCancellingAnInterceptedGoCallEndsItWithCancelled() async throws {
        let port = try serve([])
        let client = try await connect(port, [MetadataInterceptor(["k": "v"])])
        let ended = Locked<Result<Int, RPCError>?>(nil)
        let call = client.go(Self.hold, 1) { result in ended.withLock { $0 = result } }
        XCTAssertGreaterThanOrEqual(call.id, InterceptedCalls.firstID)
        try await Task.sleep(for: .milliseconds(50))
        call.cancel()
        let done = await eventually { ended.withLock { $0 } != nil }
        XCTAssertTrue(done)
        guard case .failure(let error)? = ended.withLock({ $0 }) else { return XCTFail("\(String(describing: ended.withLock { $0 }))") }
        XCTAssertEqual(error.code, .cancelled)
    }
}
