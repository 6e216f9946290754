import CMsgPack
import RPCExamples
import XCTest

@testable import SwiftRPC
@testable import SwiftRPCMessagePack

/// The router through its transport seam: requests made in memory, no sockets, no io_uring.
final class RouterTests: XCTestCase {
    private func router() throws -> Router {
        var table = RPCMethodTable()
        ArithService().register(into: &table)
        BenchService().register(into: &table)
        table.add(RPCMethod<String, String>("Text.Shout")) { s, _ in s.uppercased() }
        table.add(RPCMethod<Int, Int>("Test.Refuse")) { _, _ in throw RPCError(.unauthenticated, "no") }
        var router = Router()
        try router.add(table.handlers)
        return router
    }

    /// Dispatches `name` with `params` (encoded with Python-compatible MessagePack).
    private func dispatch(_ router: Router, _ name: String, _ params: [UInt8]) -> (HandlerOutcome, [UInt8]) {
        var zone = msgpack_zone()
        XCTAssertTrue(msgpack_zone_init(&zone, 4096))
        defer { msgpack_zone_destroy(&zone) }
        return params.withUnsafeBytes { raw in
            var object = msgpack_object()
            var offset = 0
            let rc = msgpack_unpack(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count, &offset, &zone, &object)
            XCTAssertEqual(rc, MSGPACK_UNPACK_SUCCESS)
            return withUnsafePointer(to: &object) { tree in
                let writer = MessagePackWriter(initialCapacity: 64)
                let outcome = router.run(name, params: RequestParams(bytes: raw, tree: MessagePackTree(root: tree)),
                                              context: RPCContext(method: name), writer: writer)
                switch outcome {
                case .echo(let range): return (outcome, Array(raw[range]))
                default: return (outcome, writer.withUnsafeBytes { Array($0) })
                }
            }
        }
    }

    func testInlineTypedHandlerWritesTheEncodedReply() throws {
        // [{"A": 7, "B": 6}]
        let (outcome, bytes) = dispatch(try router(), "Arith.Multiply", [0x91, 0x82, 0xa1, 0x41, 0x07, 0xa1, 0x42, 0x06])
        guard case .written = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(bytes, [0x2a])
    }

    func testParamsThatDoNotDecodeAreStatus3() throws {
        let (outcome, _) = dispatch(try router(), "Arith.Multiply", [0x91, 0xa1, 0x78]) // ["x"]
        guard case .failed(let e) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(e.code, .invalidArgument)
        XCTAssertTrue(e.message.contains("ArithArgs"), e.message)
        let (empty, _) = dispatch(try router(), "Arith.Multiply", [0x90]) // []
        guard case .failed(let e2) = empty else { return XCTFail("\(empty)") }
        XCTAssertEqual(e2.code, .invalidArgument)
    }

    /// Requests off the wire find their handler by the method's bytes (MethodIndex).
    func testWireNamesFindTheirHandlersByTheirBytes() throws {
        var table = RPCMethodTable()
        // Long names, and short ones around the hash's 8-byte loads (under, at and past 8).
        let names = (0..<200).map { "Svc\($0 % 7).Method\($0)" } + ["A.b", "Ab.c", "Abc.def", "Abc.defg", "Abcd.efgh"]
        for name in names { table.add(RPCMethod<Int, Int>(name)) { n, _ in n } }
        var router = Router()
        try router.add(table.handlers)
        func lookUp(_ name: String) -> RegisteredHandler? {
            Array(name.utf8).withUnsafeBytes { router.borrowedHandler(forWireName: $0)?.takeUnretainedValue() }
        }
        for name in names { XCTAssertEqual(lookUp(name)?.name, name) }
        // Prefixes, extensions, other case, other service, built-ins and nothing: not found.
        for miss in ["", "Svc0", "Svc0.Method0x", "svc0.Method0", "Svc1.Method0", "rpc.ping", "A.c", "Ab.b", "Abc.deg"] {
            XCTAssertNil(lookUp(miss), miss)
        }
        // Registering more later rebuilds the index.
        var more = RPCMethodTable()
        more.add(RPCMethod<Int, Int>("Late.Comer")) { n, _ in n }
        try router.add(more.handlers)
        XCTAssertEqual(lookUp("Late.Comer")?.name, "Late.Comer")
        XCTAssertEqual(lookUp("Svc3.Method3")?.name, "Svc3.Method3")
    }

    func testUnknownMethodIsStatus12() throws {
        let (outcome, _) = dispatch(try router(), "No.Such", [0x90])
        guard case .failed(let e) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(e.code, .unimplemented)
        XCTAssertEqual(e.message, "rpc: can't find method No.Such")
    }

    /// An 80 KB unknown name of 2- or 4-byte characters: the error echoes a short prefix cut
    /// on a character boundary (it used to be cut at 65,536 bytes, mid-character).
    func testAHugeUnknownNameIsEchoedShortAndWhole() throws {
        for character in ["é", "😀", "a"] {
            let name = String(repeating: character, count: 80_000 / character.utf8.count) + ".X"
            let (outcome, _) = dispatch(try router(), name, [0x90])
            guard case .failed(let e) = outcome else { return XCTFail("\(outcome)") }
            XCTAssertEqual(e.code, .unimplemented)
            XCTAssertLessThan(e.message.utf8.count, 400)
            XCTAssertTrue(e.message.hasSuffix("... (\(name.utf8.count) bytes)"), e.message)
            let shown = e.message.dropFirst("rpc: can't find method ".count).prefix { $0 != "." }
            XCTAssertTrue(shown.allSatisfy { String($0) == character }, "\(shown.prefix(8))")
            XCTAssertGreaterThan(shown.utf8.count, Router.shownNameBytes - 4)
        }
    }

    /// Every cut of a text mixing 1- to 4-byte characters ends on a scalar boundary.
    func testUTF8PrefixNeverSplitsACharacter() {
        let text = "aé€😀b😀€éa"
        for limit in 0...text.utf8.count + 1 {
            let cut = text.utf8Prefix(maxBytes: limit)
            XCTAssertLessThanOrEqual(cut.utf8.count, limit)
            XCTAssertTrue(text.hasPrefix(cut))
            XCTAssertNotNil(String(validating: Array(cut.utf8), as: UTF8.self), "limit \(limit)")
            // The cut is the longest that fits: the next whole character would not.
            if let next = text[cut.endIndex...].unicodeScalars.first {
                XCTAssertGreaterThan(cut.utf8.count + String(next).utf8.count, limit, "limit \(limit)")
            }
        }
    }

    func testHandlerErrorsKeepTheirStatus() throws {
        let (outcome, _) = dispatch(try router(), "Arith.Divide", [0x91, 0x82, 0xa1, 0x41, 0x01, 0xa1, 0x42, 0x00])
        guard case .failed(let e) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(e, RPCError(.unknown, "divide by zero"))
    }

    func testEchoSendsBackTheArgumentBytes() throws {
        let arg: [UInt8] = [0x82, 0xa1, 0x61, 0x01, 0xa1, 0x62, 0xc4, 0x02, 0xff, 0x00] // {"a":1,"b":bin}
        let (outcome, bytes) = dispatch(try router(), "Bench.Echo", [0x91] + arg)
        guard case .echo = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(bytes, arg)
    }

    func testAsyncHandlersDecodeNowAndRunLater() async throws {
        let (outcome, _) = dispatch(try router(), "Text.Shout", [0x91, 0xa2, 0x68, 0x69]) // ["hi"]
        guard case .later(let job) = outcome else { return XCTFail("\(outcome)") }
        let reply = try await job(RPCContext(method: "Text.Shout"))
        XCTAssertEqual(reply, [0xa2, 0x48, 0x49]) // "HI"
        let (refused, _) = dispatch(try router(), "Test.Refuse", [0x91, 0x01])
        guard case .later(let job2) = refused else { return XCTFail("\(refused)") }
        do {
            _ = try await job2(RPCContext(method: "Test.Refuse"))
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(RPCError(handlerError: error), RPCError(.unauthenticated, "no"))
        }
    }

    func testMethodsBuiltIn() throws {
        let (outcome, bytes) = dispatch(try router(), "rpc.methods", [0x90])
        guard case .written = outcome else { return XCTFail("\(outcome)") }
        let names = try MessagePackDecoder().decode([String].self, from: bytes)
        XCTAssertEqual(names, ["Arith.Divide", "Arith.Multiply", "Bench.Echo", "Bench.Sleep", "Test.Refuse", "Text.Shout", "rpc.methods", "rpc.ping", "rpc.stats"])
    }

    func testStatsBuiltInThroughTheSeam() throws {
        var router = try router()
        let statistics = MethodStatistics(methods: router.handlers.keys, loops: 1)
        router.statistics = statistics
        router.mapHandlers { handler in
            CallRecording.wrap(handler, counters: statistics.counters(handler.name), metrics: nil)
        }
        _ = dispatch(router, "Arith.Multiply", [0x91, 0x82, 0xa1, 0x41, 0x07, 0xa1, 0x42, 0x06])
        _ = dispatch(router, "Arith.Multiply", [0x91, 0xa1, 0x78]) // ["x"]: status 3
        let (outcome, bytes) = dispatch(router, "rpc.stats", [0x90])
        guard case .written = outcome else { return XCTFail("\(outcome)") }
        let rows = try MessagePackDecoder().decode([RPCMethodStatistics].self, from: bytes)
        XCTAssertEqual(rows.map(\.method), ["Arith.Divide", "Arith.Multiply", "Bench.Echo", "Bench.Sleep", "Test.Refuse", "Text.Shout"])
        XCTAssertEqual(rows[1], RPCMethodStatistics(method: "Arith.Multiply", calls: 2, errors: 1, errorsByCode: ["3": 1]))
    }
}
