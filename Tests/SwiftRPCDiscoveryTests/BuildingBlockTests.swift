@testable import SwiftRPCDiscovery
import SwiftRPC
import XCTest

/// The retry budget, the gateway stream splitter, the snapshot cell and the
/// never-sent marking on SwiftRPC's errors.
final class BuildingBlockTests: XCTestCase {
    func testRetryBudgetAllowsOnlyWhatCallsDeposited() {
        let budget = RPCRetryBudget(ratio: 0.25, maximum: 2)
        XCTAssertTrue(budget.tryWithdraw())
        XCTAssertTrue(budget.tryWithdraw())
        XCTAssertFalse(budget.tryWithdraw()) // the starting two are spent
        for _ in 0..<3 { budget.recordCall() }
        XCTAssertFalse(budget.tryWithdraw()) // 0.75 tokens
        budget.recordCall()
        XCTAssertTrue(budget.tryWithdraw())  // 1.0
        for _ in 0..<100 { budget.recordCall() }
        XCTAssertEqual(budget.tokens, 2)     // capped
    }

    func testARefundedTokenComesBackButNeverPastTheCap() {
        let budget = RPCRetryBudget(ratio: 1, maximum: 2)
        XCTAssertTrue(budget.tryWithdraw())
        budget.refund()                      // the retry was not made after all
        XCTAssertEqual(budget.tokens, 2)
        XCTAssertTrue(budget.tryWithdraw())
        budget.recordCall()                  // refilled to the cap meanwhile
        budget.refund()
        XCTAssertEqual(budget.tokens, 2)
    }

    func testSplitterFindsObjectsAtEverySplitPoint() {
        let text = #"{"result":{"a":"}{\"x"}}"# + "\n" + #"{"result":{"events":[{"kv":{"key":"e30="}}]}}"# + "\n"
        let bytes = Array(text.utf8)
        for cut in 0...bytes.count {
            var splitter = JSONObjectSplitter()
            let objects = splitter.feed(bytes[..<cut]) + splitter.feed(bytes[cut...])
            XCTAssertEqual(objects.map { String(decoding: $0, as: UTF8.self) },
                           [#"{"result":{"a":"}{\"x"}}"#, #"{"result":{"events":[{"kv":{"key":"e30="}}]}}"#], "cut at \(cut)")
        }
    }

    func testPrefixRangeEnd() {
        XCTAssertEqual(prefixRangeEnd(Array("a/".utf8)), Array("a0".utf8))
        XCTAssertEqual(prefixRangeEnd([0x61, 0xff]), [0x62])
    }

    final class Box: Sendable {
        let a: Int
        let b: Int
        init(_ v: Int) { a = v; b = v }
    }

    func testSnapshotCellUnderConcurrentReadersAndWriter() async {
        let cell = SnapshotCell(Box(0))
        await withTaskGroup(of: Int.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var seen = 0
                    for _ in 0..<200_000 {
                        let box = cell.load()
                        precondition(box.a == box.b) // a freed box would not hold this
                        seen = max(seen, box.a)
                    }
                    return seen
                }
            }
            group.addTask {
                for v in 1...2_000 { cell.store(Box(v)) }
                return 0
            }
            for await _ in group {}
        }
        XCTAssertEqual(cell.load().a, 2_000)
    }

    func testRequestNeverSentIsSetByTheClientAndIgnoredByEquality() async throws {
        try requireEventLoop()
        let server = try TestServer(name: "a")
        let client = try await RPCClient.connect(host: "127.0.0.1", port: server.port)
        client.close()
        do {
            _ = try await client.call(TestMethods.who, 1)
            XCTFail("a closed client cannot call")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.requestNeverSent, "\(error)")
        }
        var marked = RPCError(.unavailable, "x")
        marked.requestNeverSent = true
        XCTAssertEqual(marked, RPCError(.unavailable, "x"))
        XCTAssertFalse(RPCError(.unavailable, "x").requestNeverSent)
        server.stop()
    }
}
