import XCTest

@testable import SwiftRPC

/// `RPCMetadata` keeps no dictionary while empty; it must still behave as one.
final class MetadataTests: XCTestCase {
    func testEmptyMetadataEqualsMetadataEmptiedAgain() {
        var m = RPCMetadata()
        XCTAssertTrue(m.isEmpty)
        XCTAssertEqual(m.entries, [:])
        m["trace"] = "abc"
        m.entries["raw"] = .bytes([1, 2])
        XCTAssertFalse(m.isEmpty)
        XCTAssertEqual(m["trace"], "abc")
        XCTAssertEqual(m.entries.count, 2)
        XCTAssertNotEqual(m, RPCMetadata())
        m["trace"] = nil
        m.entries["raw"] = nil
        XCTAssertTrue(m.isEmpty)
        XCTAssertEqual(m, RPCMetadata())
        XCTAssertEqual(m.hashValue, RPCMetadata().hashValue)
        m.entries = [:]
        XCTAssertTrue(m.isEmpty)
    }

    func testLiteralsAndTheWireAgree() {
        let m: RPCMetadata = ["a": "1", "b": "2"]
        XCTAssertEqual(m.entries, ["a": .text("1"), "b": .text("2")])
        let back = ExtEntries.with(m) { ext, count in ExtEntries.metadata(ext, Int(count)) }
        XCTAssertEqual(back, m)
        let none = ExtEntries.with(RPCMetadata()) { ext, count in ExtEntries.metadata(ext, Int(count)) }
        XCTAssertTrue(none.isEmpty)
    }
}
