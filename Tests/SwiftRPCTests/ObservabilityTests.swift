import InMemoryTracing
import MetricsTestKit
import RPCExamples
import Tracing
import XCTest

@testable import SwiftRPC

/// rpc.stats, swift-metrics and swift-distributed-tracing over a real connection.
final class ObservabilityTests: XCTestCase {
    static let fail = RPCMethod<Int, Int>("Test.Fail")
    static let childSpan = RPCMethod<Int, String>("Test.ChildSpan")
    static let hold = RPCMethod<Int, Int>("Test.Hold")
    static let traceparent = RPCMethod<Int, String>("Test.Traceparent")

    private var server: RPCServer!
    private var clients: [RPCClient] = []

    override func setUp() async throws { try requireEventLoop() }

    override func tearDown() async throws {
        for c in clients { c.close() }
        server?.stop()
    }

    private func serve(_ configuration: RPCServer.Configuration) throws -> Int {
        server = RPCServer(configuration: configuration)
        try registerReferenceServices(on: server)
        try server.register(Self.fail) { code, _ in throw RPCError(.init(rawValue: code), "failing with \(code)") }
        try server.register(Self.hold) { _, _ in
            try await Task.sleep(for: .seconds(30))
            return 0
        }
        try server.register(Self.traceparent) { _, context in context.metadata["traceparent"] ?? "none" }
        return try server.start()
    }

    private func connect(_ port: Int, _ configuration: RPCClient.Configuration = .init()) async throws -> RPCClient {
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port, configuration: configuration)
        clients.append(client)
        return client
    }

    private func row(_ rows: [RPCMethodStatistics], _ method: String) -> RPCMethodStatistics? {
        rows.first { $0.method == method }
    }

    // MARK: rpc.stats

    func testStatsCountCallsAndErrorsByCodePerMethod() async throws {
        let port = try serve(.init(loops: 2))
        let client = try await connect(port)
        for i in 1...3 { _ = try await client.call(Arith.multiply, ArithArgs(A: i, B: i)) }
        _ = try await client.call(Arith.divide, ArithArgs(A: 4, B: 2))
        await expectRPCError(.unknown) { _ = try await client.call(Arith.divide, ArithArgs(A: 1, B: 0)) }
        await expectRPCError(.invalidArgument) { _ = try await client.call("Arith.Divide", "not args", as: Int.self) }
        await expectRPCError(.unauthenticated) { _ = try await client.call(Self.fail, 16) }
        await expectRPCError(.resourceExhausted) { _ = try await client.call(Self.fail, 8) }
        await expectRPCError(.resourceExhausted) { _ = try await client.call(Self.fail, 8) }
        await expectRPCError(.unimplemented) { _ = try await client.call("No.Such", 1, as: Int.self) }
        let echoed = try await client.call(Bench.echo, [1, 2, 3])   // raw inline
        XCTAssertEqual(echoed, [1, 2, 3])

        let rows = try await client.call(RPCBuiltins.stats, nil)
        XCTAssertEqual(rows.map(\.method), rows.map(\.method).sorted())
        XCTAssertEqual(row(rows, "Arith.Multiply"), RPCMethodStatistics(method: "Arith.Multiply", calls: 3, errors: 0, errorsByCode: [:]))
        XCTAssertEqual(row(rows, "Arith.Divide"),
                       RPCMethodStatistics(method: "Arith.Divide", calls: 3, errors: 2, errorsByCode: ["2": 1, "3": 1]))
        XCTAssertEqual(row(rows, "Test.Fail"),
                       RPCMethodStatistics(method: "Test.Fail", calls: 3, errors: 3, errorsByCode: ["16": 1, "8": 2]))
        XCTAssertEqual(row(rows, "Bench.Echo")?.calls, 1)
        XCTAssertEqual(row(rows, "Test.Hold")?.calls, 0)
        XCTAssertNil(row(rows, "No.Such"))
        XCTAssertNil(row(rows, "rpc.stats"))

        // rpc.methods still answers a plain sorted list of names, now naming rpc.stats.
        let names = try await client.call(RPCBuiltins.methods, nil)
        XCTAssertEqual(names, names.sorted())
        XCTAssertTrue(names.contains("rpc.stats") && names.contains("rpc.ping") && names.contains("Arith.Multiply"))
    }

    func testStatsCountInterceptorRefusals() async throws {
        let port = try serve(.init(loops: 1, interceptors: [TokenAuthInterceptor(tokens: ["t": "me"])]))
        let client = try await connect(port)
        await expectRPCError(.unauthenticated) { _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1)) }
        _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1), metadata: ["authorization": "t"])
        let rows = try await client.call(RPCBuiltins.stats, nil)
        XCTAssertEqual(row(rows, "Arith.Multiply"),
                       RPCMethodStatistics(method: "Arith.Multiply", calls: 2, errors: 1, errorsByCode: ["16": 1]))
    }

    func testStatsSwitchedOffAnswerZeros() async throws {
        var configuration = RPCServer.Configuration(loops: 1)
        configuration.methodStatistics = false
        let port = try serve(configuration)
        let client = try await connect(port)
        _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1))
        let rows = try await client.call(RPCBuiltins.stats, nil)
        XCTAssertEqual(row(rows, "Arith.Multiply")?.calls, 0)
        XCTAssertTrue(rows.allSatisfy { $0.calls == 0 && $0.errors == 0 })
    }

    // MARK: Metrics

    func testServerMetricsPerMethod() async throws {
        let metrics = TestMetrics()
        let port = try serve(.init(loops: 1, metrics: .factory(metrics)))
        let client = try await connect(port)
        for i in 1...4 { _ = try await client.call(Arith.multiply, ArithArgs(A: i, B: 1)) }
        await expectRPCError(.unknown) { _ = try await client.call(Arith.divide, ArithArgs(A: 1, B: 0)) }
        await expectRPCError(.invalidArgument) { _ = try await client.call("Arith.Divide", "x", as: Int.self) }
        await expectRPCError(.unauthenticated) { _ = try await client.call(Self.fail, 16) }

        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_calls_total", dimensions: [("method", "Arith.Multiply")]), 4)
        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_calls_total", dimensions: [("method", "Arith.Divide")]), 2)
        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_errors_total", dimensions: [("method", "Arith.Divide"), ("code", "2")]), 1)
        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_errors_total", dimensions: [("method", "Arith.Divide"), ("code", "3")]), 1)
        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_errors_total", dimensions: [("method", "Test.Fail"), ("code", "16")]), 1)
        XCTAssertTrue(metrics.counters(label: "rpc_server_errors_total", dimensions: [("method", "Arith.Multiply"), ("code", "2")]).isEmpty)
        let timer = try metrics.expectTimer("rpc_server_duration", [("method", "Arith.Multiply")])
        XCTAssertEqual(timer.values.count, 4)
        XCTAssertTrue(timer.values.allSatisfy { $0 >= 0 })
        // Every call ended: the in-flight meter is back at zero.
        let inFlight = try metrics.expectMeter("rpc_server_in_flight", [("method", "Arith.Multiply")])
        XCTAssertEqual(inFlight.lastValue, 0)
    }

    func testServerGaugesArePolledFromTheCore() async throws {
        let metrics = TestMetrics()
        var options = RPCMetricsOptions.factory(metrics)
        options.pollInterval = .milliseconds(10)
        let port = try serve(.init(loops: 1, metrics: options))
        let first = try await connect(port)
        _ = try await connect(port)
        let call = first.go(Self.hold, 1) { _ in }
        let seen = await eventually {
            (try? metrics.expectGauge("rpc_server_connections").lastValue) == 2
                && (try? metrics.expectGauge("rpc_server_requests_in_flight").lastValue) == 1
        }
        XCTAssertTrue(seen)
        call.cancel()
    }

    func testServerTrafficCountersArePolledFromTheCore() async throws {
        let metrics = TestMetrics()
        var options = RPCMetricsOptions.factory(metrics)
        options.pollInterval = .milliseconds(10)
        let port = try serve(.init(loops: 1, metrics: options))
        let client = try await connect(port)
        for i in 1...3 { _ = try await client.call(Arith.multiply, ArithArgs(A: i, B: 2)) }
        let stats = server.statistics
        XCTAssertGreaterThanOrEqual(stats.framesIn, 3)
        XCTAssertGreaterThanOrEqual(stats.framesOut, 3)
        XCTAssertGreaterThan(stats.bytesIn, 3 * 4)
        XCTAssertEqual(stats.rejectedFrames, 0)
        let seen = await eventually {
            metrics.counterTotal(label: "rpc_server_frames_in_total") >= 3
                && metrics.counterTotal(label: "rpc_server_frames_out_total") >= 3
                && metrics.counterTotal(label: "rpc_server_bytes_in_total") > 12
                && metrics.counterTotal(label: "rpc_server_bytes_out_total") > 12
        }
        XCTAssertTrue(seen)
        XCTAssertEqual(metrics.counterTotal(label: "rpc_server_rejected_frames_total"), 0)
    }

    func testInFlightMeterCountsARunningCall() async throws {
        let metrics = TestMetrics()
        let port = try serve(.init(loops: 1, metrics: .factory(metrics)))
        let client = try await connect(port)
        let call = client.go(Self.hold, 1) { _ in }
        let running = await eventually {
            (try? metrics.expectMeter("rpc_server_in_flight", [("method", "Test.Hold")]).lastValue) == 1
        }
        XCTAssertTrue(running)
        call.cancel()
        let ended = await eventually {
            (try? metrics.expectMeter("rpc_server_in_flight", [("method", "Test.Hold")]).lastValue) == 0
        }
        XCTAssertTrue(ended)
        let cancelled = await eventually {
            metrics.counterTotal(label: "rpc_server_errors_total", dimensions: [("method", "Test.Hold"), ("code", "1")]) == 1
        }
        XCTAssertTrue(cancelled)
    }

    func testMetricsOptionsResolveOnce() {
        // Nothing is bootstrapped in the test process: .automatic finds no backend, so
        // servers and clients made with the defaults record nothing.
        XCTAssertNil(RPCMetricsOptions.automatic.resolve())
        XCTAssertNil(RPCMetricsOptions.off.resolve())
        let metrics = TestMetrics()
        XCTAssertTrue(RPCMetricsOptions.factory(metrics).resolve() as? TestMetrics === metrics)
    }

    func testClientMetricsPollTheCoreCounters() async throws {
        // A peer that never answers: the call can end only by the client's own timeout. (A
        // real server also honours the call's deadline and may answer deadlineExceeded first,
        // which the client counts as a reply, not a timeout.)
        let peer = try SilentPeer()
        let metrics = TestMetrics()
        var options = RPCMetricsOptions.factory(metrics)
        options.pollInterval = .milliseconds(10)
        var configuration = RPCClient.Configuration()
        configuration.metrics = options
        let client = try await connect(peer.port, configuration)
        await expectRPCError(.deadlineExceeded) { _ = try await client.call(Self.hold, 1, timeout: .milliseconds(20)) }
        // One poll may see the timeout counted before the pending count falls (the core
        // stores them one after the other): wait for both.
        let counted = await eventually {
            metrics.counterTotal(label: "rpc_client_timeouts_total") == 1
                && (try? metrics.expectGauge("rpc_client_pending_calls").lastValue) == 0
        }
        XCTAssertTrue(counted, "timeouts: \(metrics.counterTotal(label: "rpc_client_timeouts_total"))")
        let pending = try metrics.expectGauge("rpc_client_pending_calls")
        XCTAssertEqual(pending.lastValue, 0)
    }

    // MARK: Tracing

    func testTraceparentTravelsFromClientSpanToServerSpan() async throws {
        let tracer = W3CTestTracer()
        let port = try serve(.init(loops: 1, tracing: .tracer(tracer)))
        let client = try await connect(port, {
            var c = RPCClient.Configuration()
            c.tracing = .tracer(tracer)
            return c
        }())
        let header = try await client.call(Self.traceparent, 1)
        _ = try await client.call(Arith.multiply, ArithArgs(A: 2, B: 2))           // inline handler
        await expectRPCError(.unknown) { _ = try await client.call(Arith.divide, ArithArgs(A: 1, B: 0)) }

        let finished = await eventually { tracer.spans.finishedSpans.count >= 6 }
        XCTAssertTrue(finished)
        let spans = tracer.spans.finishedSpans
        for method in ["Arith.Multiply", "Arith.Divide"] {
            guard let clientSpan = spans.first(where: { $0.operationName == method && $0.kind == .client }),
                  let serverSpan = spans.first(where: { $0.operationName == method && $0.kind == .server }) else {
                return XCTFail("spans for \(method): \(spans.map { "\($0.operationName) \($0.kind)" })")
            }
            XCTAssertEqual(serverSpan.spanContext.traceID, clientSpan.spanContext.traceID)
            XCTAssertEqual(serverSpan.spanContext.parentSpanID, clientSpan.spanContext.spanID)
            XCTAssertEqual(clientSpan.spanContext.traceID.count, 32)
        }
        // The handler saw the W3C header of the client span that carried its call.
        let carrier = try XCTUnwrap(spans.first { $0.operationName == "Test.Traceparent" && $0.kind == .client })
        XCTAssertEqual(header, "00-\(carrier.spanContext.traceID)-\(carrier.spanContext.spanID)-01")
        let failed = spans.first { $0.operationName == "Arith.Divide" && $0.kind == .server }
        XCTAssertEqual(failed?.attributes["rpc.status_code"]?.toSpanAttribute(), .int64(2))
    }

    func testHandlersSeeTheServerSpanAsCurrentContext() async throws {
        let tracer = W3CTestTracer()
        server = RPCServer(configuration: .init(loops: 1, tracing: .tracer(tracer)))
        try server.register(Self.childSpan) { _, _ in
            tracer.withSpan("child") { _ in ServiceContext.current?.inMemorySpanContext?.traceID ?? "none" }
        }
        let port = try server.start()
        let client = try await connect(port, {
            var c = RPCClient.Configuration()
            c.tracing = .tracer(tracer)
            return c
        }())
        let traceID = try await tracer.withSpan("caller") { span in
            XCTAssertNotNil(span.context.inMemorySpanContext)
            return try await client.call(Self.childSpan, 1)
        }
        let spans = tracer.spans.finishedSpans
        let caller = try XCTUnwrap(spans.first { $0.operationName == "caller" })
        let child = try XCTUnwrap(spans.first { $0.operationName == "child" })
        let serverSpan = try XCTUnwrap(spans.first { $0.kind == .server })
        XCTAssertEqual(traceID, caller.spanContext.traceID)
        XCTAssertEqual(child.spanContext.traceID, caller.spanContext.traceID)
        XCTAssertEqual(child.spanContext.parentSpanID, serverSpan.spanContext.spanID)
    }

    func testNoTracerMeansNoSpansAndNoTraceparent() async throws {
        XCTAssertNil(RPCTracingOptions.automatic.resolve())
        let port = try serve(.init(loops: 1))
        let client = try await connect(port)
        XCTAssertNil(client.pipeline)
        let seen = try await client.call(Self.traceparent, 1)
        XCTAssertEqual(seen, "none")
    }
}
