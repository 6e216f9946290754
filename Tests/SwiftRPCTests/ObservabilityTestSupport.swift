import InMemoryTracing
@testable import SwiftRPC
import Tracing
import XCTest

/// Fails unless `body` throws an `RPCError` with `code` (and `message`, when given).
func expectRPCError(_ code: RPCError.Code, message: String? = nil,
                    file: StaticString = #filePath, line: UInt = #line,
                    _ body: () async throws -> Void) async {
    do {
        try await body()
        XCTFail("expected status \(code.rawValue)", file: file, line: line)
    } catch let error as RPCError {
        XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
        if let message { XCTAssertEqual(error.message, message, file: file, line: line) }
    } catch {
        XCTFail("unexpected \(error)", file: file, line: line)
    }
}

/// A tracer that propagates W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-01`),
/// as an OpenTelemetry tracer does, and keeps its spans in memory (InMemoryTracer).
struct W3CTestTracer: Tracer {
    typealias Span = InMemorySpan
    let spans: InMemoryTracer

    init() {
        let counter = Locked(0)
        @Sendable func next(_ width: Int) -> String {
            let n = counter.withLock { $0 += 1; return $0 }
            let hex = String(n, radix: 16)
            return String(repeating: "0", count: width - hex.count) + hex
        }
        spans = InMemoryTracer(idGenerator: .init(nextTraceID: { next(32) }, nextSpanID: { next(16) }))
    }

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> InMemorySpan {
        spans.startSpan(operationName, context: context(), ofKind: kind, at: instant(),
                        function: function, file: fileID, line: line)
    }

    func forceFlush() {}

    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let span = context.inMemorySpanContext else { return }
        injector.inject("00-\(span.traceID)-\(span.spanID)-01", forKey: "traceparent", into: &carrier)
    }

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        guard let value = extractor.extract(key: "traceparent", from: carrier) else { return }
        let parts = value.split(separator: "-")
        guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16 else { return }
        context.inMemorySpanContext = InMemorySpanContext(traceID: String(parts[1]), spanID: String(parts[2]), parentSpanID: nil)
    }
}
