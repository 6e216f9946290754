// Tests for the MessagePack Codable coder (Sources/SwiftRPCMessagePack).
//
// - Fixtures: Fixtures/msgpack_cases.json holds bytes made by Python's msgpack
//   (scripts/gen_msgpack_fixtures.py). For each case name, `fixtureValues` below has the
//   equivalent Swift value(s); the encoder must produce the same bytes and decode them back.
// - Round trips of every Codable shape, integer/float leniency, error paths with coding paths,
//   and hostile input (memory bombs, lengths past the end, deep nesting, truncation) that must
//   produce DecodingError, never a crash or a huge allocation.
//
// Run: swift test --filter MessagePackTests

import Foundation
import XCTest

@testable import SwiftRPC
@testable import SwiftRPCMessagePack

// MARK: - Types used by the tests

private struct MPPoint: Codable, Equatable {
    var x: Int
    var y: Int
}

private struct MPEmpty: Codable, Equatable {}

private struct MPSixteen: Codable, Equatable {
    var a = 0, b = 1, c = 2, d = 3, e = 4, f = 5, g = 6, h = 7
    var i = 8, j = 9, k = 10, l = 11, m = 12, n = 13, o = 14, p = 15
}

private struct MPWithOptional: Codable, Equatable {
    var id: Int
    var note: String?
}

private struct MPNested: Codable, Equatable {
    var name: String
    var tags: [String]
    var origin: MPPoint
    var scores: [String: Double]
    var blob: [UInt8]
    var ratio: Double
    var small: UInt8
    var flag: Bool
    var points: [MPPoint]

    static let sample = MPNested(
        name: "widget", tags: ["a", "b"], origin: MPPoint(x: 1, y: -2), scores: ["k": 1.5],
        blob: [0x00, 0x01, 0xff], ratio: 0.5, small: 200, flag: true,
        points: [MPPoint(x: 1, y: 2), MPPoint(x: 3, y: 4)])
}

/// Same wire shape as MPNested but with Data for the blob.
private struct MPNestedData: Codable, Equatable {
    var name: String
    var tags: [String]
    var origin: MPPoint
    var scores: [String: Double]
    var blob: Data
    var ratio: Double
    var small: UInt8
    var flag: Bool
    var points: [MPPoint]
}

private enum MPColor: String, Codable, Equatable { case red, green }
private enum MPLevel: Int, Codable, Equatable { case low = 1, mid = 2 }

private class MPBase: Codable {
    var base: Int
    init(base: Int) { self.base = base }
}

/// Encodes its superclass under "super" through superEncoder()/superDecoder().
private final class MPSub: MPBase, Equatable {
    var sub: Int
    private enum Keys: String, CodingKey { case sub }

    init(sub: Int, base: Int) {
        self.sub = sub
        super.init(base: base)
    }

    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        sub = try container.decode(Int.self, forKey: .sub)
        try super.init(from: container.superDecoder())
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(sub, forKey: .sub)
        try super.encode(to: container.superEncoder())
    }

    static func == (a: MPSub, b: MPSub) -> Bool { a.sub == b.sub && a.base == b.base }
}

/// Shares one encoder with its superclass: both write into the same map.
private final class MPFlatSub: MPBase, Equatable {
    var extra: String
    private enum Keys: String, CodingKey { case extra }

    init(extra: String, base: Int) {
        self.extra = extra
        super.init(base: base)
    }

    required init(from decoder: any Decoder) throws {
        extra = try decoder.container(keyedBy: Keys.self).decode(String.self, forKey: .extra)
        try super.init(from: decoder)
    }

    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(extra, forKey: .extra)
        try super.encode(to: encoder)
    }

    static func == (a: MPFlatSub, b: MPFlatSub) -> Bool { a.extra == b.extra && a.base == b.base }
}

/// Uses nested keyed/unkeyed containers and super coders of unkeyed containers by hand.
private struct MPHandWritten: Codable, Equatable {
    var id: Int
    var inner: Int
    var rows: [[String]]
    var tail: MPPoint

    private enum Keys: String, CodingKey { case id, nested, rows }
    private enum InnerKeys: String, CodingKey { case inner }

    init(id: Int, inner: Int, rows: [[String]], tail: MPPoint) {
        self.id = id
        self.inner = inner
        self.rows = rows
        self.tail = tail
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(id, forKey: .id)
        var nested = container.nestedContainer(keyedBy: InnerKeys.self, forKey: .nested)
        try nested.encode(inner, forKey: .inner)
        var rowsContainer = container.nestedUnkeyedContainer(forKey: .rows)
        for row in rows {
            var rowContainer = rowsContainer.nestedUnkeyedContainer()
            for cell in row { try rowContainer.encode(cell) }
        }
        try tail.encode(to: rowsContainer.superEncoder())
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        id = try container.decode(Int.self, forKey: .id)
        inner = try container.nestedContainer(keyedBy: InnerKeys.self, forKey: .nested).decode(Int.self, forKey: .inner)
        var rowsContainer = try container.nestedUnkeyedContainer(forKey: .rows)
        var rows: [[String]] = []
        while rowsContainer.count! - rowsContainer.currentIndex > 1 {
            var rowContainer = try rowsContainer.nestedUnkeyedContainer()
            var row: [String] = []
            while !rowContainer.isAtEnd { row.append(try rowContainer.decode(String.self)) }
            rows.append(row)
        }
        self.rows = rows
        tail = try MPPoint(from: rowsContainer.superDecoder())
    }
}

/// Writes to a keyed container after a later sibling container was started: the one pattern a
/// streaming encoder cannot honor.
private struct MPInterleaved: Encodable {
    private enum Keys: String, CodingKey { case a, b, x }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        var first = container.nestedContainer(keyedBy: Keys.self, forKey: .a)
        var second = container.nestedContainer(keyedBy: Keys.self, forKey: .b)
        try second.encode(1, forKey: .x)
        try first.encode(2, forKey: .x)
    }
}

private struct MPThrows: Encodable {
    struct Boom: Error {}
    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(1)
        throw Boom()
    }
}

/// Encodes nothing at all: becomes an empty map.
private struct MPSilent: Codable, Equatable {
    init() {}
    init(from decoder: any Decoder) throws {}
    func encode(to encoder: any Encoder) throws {}
}

private struct MPSmall: Codable, Equatable { var small: UInt8 }

/// A str or a bool, read through a single-value container.
private enum MPScalar: Decodable, Equatable {
    case string(String)
    case bool(Bool)
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let string = try? container.decode(String.self) {
            self = .string(string)
        } else {
            self = .bool(try container.decode(Bool.self))
        }
    }
}

/// Int-backed coding keys still encode as field names.
private struct MPIntCodingKeys: Codable, Equatable {
    var a: Int
    enum CodingKeys: Int, CodingKey { case a = 9 }
}

private struct MPWithIntMap: Codable, Equatable {
    var m: [Int: String]
    var o: [Int: Bool]?
}
private struct MPOuter: Codable, Equatable { var inner: [MPSmall] }

// MARK: - Helpers

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

private func bytes(hex: String) -> [UInt8] {
    var result: [UInt8] = []
    result.reserveCapacity(hex.utf8.count / 2)
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

private func path(_ codingPath: [any CodingKey]) -> [String] {
    codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
}

/// One Swift counterpart of a fixture: how to encode it, and how to check a decode of the bytes.
private struct SwiftCase {
    let label: String
    let encode: () throws -> [UInt8]
    let checkDecode: ([UInt8]) throws -> Void
}

private func value<T: Codable & Equatable>(_ value: T, _ label: String? = nil) -> SwiftCase {
    SwiftCase(
        label: label ?? "\(T.self)",
        encode: { try MessagePackEncoder().encode(value) },
        checkDecode: { bytes in
            let decoded = try MessagePackDecoder().decode(T.self, from: bytes)
            XCTAssertEqual(decoded, value, "decoding as \(T.self)")
        })
}

/// A params array `[value]` through the RPC layer's internal entry points.
private func params<T: Codable & Equatable>(_ value: T) -> SwiftCase {
    SwiftCase(
        label: "params \(T.self)",
        encode: {
            let writer = MessagePackWriter()
            try MessagePackEncoder().encodeParams(value, into: writer)
            return writer.bytes
        },
        checkDecode: { bytes in
            let decoded = try bytes.withUnsafeBytes { try MessagePackDecoder().decodeFirstParam(T.self, from: $0) }
            XCTAssertEqual(decoded, value)
        })
}

/// Every Swift integer type that can hold `v`.
private func integers(_ v: Int128) -> [SwiftCase] {
    var cases: [SwiftCase] = []
    func add<T: FixedWidthInteger & Codable>(_ type: T.Type) {
        if let x = T(exactly: v) { cases.append(value(x)) }
    }
    add(Int.self); add(Int8.self); add(Int16.self); add(Int32.self); add(Int64.self)
    add(UInt.self); add(UInt8.self); add(UInt16.self); add(UInt32.self); add(UInt64.self)
    return cases
}

private func binary(_ n: Int) -> [SwiftCase] {
    let bytes = (0..<n).map { UInt8($0 % 251) }
    return [value(bytes, "[UInt8]"), value(Data(bytes), "Data")]
}

private func makeFixtureValues() -> [String: [SwiftCase]] {
    var table: [String: [SwiftCase]] = [:]
    let ints: [String: Int128] = [
        "int_0": 0, "int_1": 1, "int_127": 127, "int_128": 128, "int_255": 255, "int_256": 256,
        "int_65535": 65535, "int_65536": 65536, "int_4294967295": 4_294_967_295, "int_4294967296": 4_294_967_296,
        "int_neg1": -1, "int_neg32": -32, "int_neg33": -33, "int_neg128": -128, "int_neg129": -129,
        "int_neg32768": -32768, "int_neg32769": -32769, "int_neg2147483648": -2_147_483_648,
        "int_neg2147483649": -2_147_483_649, "int64_min": Int128(Int64.min), "int64_max": Int128(Int64.max),
        "uint64_max": Int128(UInt64.max),
    ]
    for (name, v) in ints { table[name] = integers(v) }
    for n in [0, 1, 31, 32, 255, 256, 65536] { table["str_\(n)"] = [value(String(repeating: "a", count: n))] }
    table["str_unicode"] = [value("h\u{e9}llo \u{2713} \u{1F600}")]
    for n in [0, 3, 255, 256, 65536] { table["bin_\(n)"] = binary(n) }
    table["float32_1_5"] = [value(Float(1.5))]
    table["float32_neg_0_25"] = [value(Float(-0.25))]
    table["float64_1_1"] = [value(1.1)]
    table["float64_neg_1e300"] = [value(-1e300)]
    table["float64_0"] = [value(0.0)]
    table["bool_true"] = [value(true)]
    table["bool_false"] = [value(false)]
    table["nil"] = [value(Int?.none, "Int?"), value(MPPoint?.none, "MPPoint?")]
    table["array_ints"] = [value([1, 2, 3]), value([UInt16(1), 2, 3]), value([Int8(1), 2, 3])]
    table["array_16"] = [value(Array(0..<16))]
    table["array_empty"] = [value([Int]()), value([String]())]
    table["array_nested"] = [value([[1, 2], [3], []])]
    table["array_optional_ints"] = [value([1, nil, 3] as [Int?])]
    table["array_strings"] = [value(["a", "bc"])]
    table["struct_point"] = [value(MPPoint(x: 1, y: -2))]
    table["struct_empty"] = [value(MPEmpty()), value(MPSilent(), "MPSilent")]
    table["struct_16_fields"] = [value(MPSixteen())]
    table["struct_optional_nil"] = [value(MPWithOptional(id: 7, note: nil))]
    table["struct_optional_set"] = [value(MPWithOptional(id: 7, note: "hi"))]
    let nested = MPNested.sample
    table["struct_nested"] = [
        value(nested),
        value(MPNestedData(
            name: nested.name, tags: nested.tags, origin: nested.origin, scores: nested.scores, blob: Data(nested.blob),
            ratio: nested.ratio, small: nested.small, flag: nested.flag, points: nested.points)),
    ]
    table["array_of_structs"] = [value([MPPoint(x: 1, y: 2), MPPoint(x: 3, y: 4)])]
    table["dict_string_key"] = [value(["key": 1])]
    table["dict_int_key"] = [value([1: "one"])]
    table["dict_int_key_negative"] = [value([-5: "neg"])]
    table["dict_int_key_large"] = [value([70000: true])]
    table["enum_string"] = [value(MPColor.red)]
    table["enum_int"] = [value(MPLevel.mid)]
    table["class_with_super"] = [value(MPSub(sub: 1, base: 2))]
    table["params_point"] = [params(MPPoint(x: 1, y: -2))]
    table["params_int"] = [params(5), params(UInt8(5))]
    table["params_bin"] = [params([UInt8]([1, 2, 3])), params(Data([1, 2, 3]))]
    return table
}

private struct FixtureFile: Decodable {
    struct Case: Decodable {
        let name: String
        let hex: String
    }
    let cases: [Case]
}

// MARK: - Tests

final class MessagePackTests: XCTestCase {
    private func assertDecodingError<T: Decodable>(
        _ type: T.Type, _ input: [UInt8], maxDepth: Int? = nil, file: StaticString = #filePath, line: UInt = #line,
        _ check: (DecodingError) -> Void = { _ in }
    ) {
        var decoder = MessagePackDecoder()
        if let maxDepth { decoder.maxDepth = maxDepth }
        do {
            let value = try decoder.decode(type, from: input)
            XCTFail("expected a DecodingError, decoded \(value)", file: file, line: line)
        } catch let error as DecodingError {
            check(error)
        } catch {
            XCTFail("expected a DecodingError, got \(error)", file: file, line: line)
        }
    }

    private func dataCorruptedContext(_ error: DecodingError) -> DecodingError.Context? {
        if case .dataCorrupted(let context) = error { return context }
        return nil
    }

    private func roundTrip<T: Codable & Equatable>(_ value: T, file: StaticString = #filePath, line: UInt = #line) throws {
        let bytes = try MessagePackEncoder().encode(value)
        XCTAssertEqual(try MessagePackDecoder().decode(T.self, from: bytes), value, file: file, line: line)
    }

    // MARK: Fixtures

    func testFixturesMatchPythonByteForByte() throws {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "msgpack_cases", withExtension: "json", subdirectory: "Fixtures"))
        let file = try JSONDecoder().decode(FixtureFile.self, from: Data(contentsOf: url))
        XCTAssertGreaterThan(file.cases.count, 50)
        let fixtureValues = makeFixtureValues()
        var seen = Set<String>()
        for fixture in file.cases {
            seen.insert(fixture.name)
            guard let swiftCases = fixtureValues[fixture.name], !swiftCases.isEmpty else {
                XCTFail("no Swift value for fixture \(fixture.name)")
                continue
            }
            let expected = bytes(hex: fixture.hex)
            for swiftCase in swiftCases {
                let encoded = try swiftCase.encode()
                if encoded != expected {
                    XCTFail("\(fixture.name) as \(swiftCase.label): encoded \(hex(encoded).prefix(80)) expected \(fixture.hex.prefix(80))")
                }
                do {
                    try swiftCase.checkDecode(expected)
                } catch {
                    XCTFail("\(fixture.name) as \(swiftCase.label): decode failed: \(error)")
                }
            }
        }
        XCTAssertEqual(Set(fixtureValues.keys).subtracting(seen), [], "Swift cases without a fixture")
    }

    // MARK: Round trips

    func testRoundTripsOfEveryShape() throws {
        try roundTrip(MPNested.sample)
        try roundTrip([MPNested.sample, MPNested.sample])
        try roundTrip(MPHandWritten(id: 1, inner: 2, rows: [["a", "b"], [], ["c"]], tail: MPPoint(x: 3, y: 4)))
        try roundTrip(MPSub(sub: 5, base: 6))
        try roundTrip(MPFlatSub(extra: "e", base: 7))
        try roundTrip(["a": MPPoint(x: 1, y: 2), "b": MPPoint(x: 3, y: 4)])
        try roundTrip(["5": 1, "x": 2, "-3": 3])  // numeric String keys stay strings
        try roundTrip(Dictionary(uniqueKeysWithValues: (0..<100).map { ($0 * 7 - 300, "v\($0)") }))
        try roundTrip([1: [2: [3: "deep"]]])
        try roundTrip(Set(["x", "y", "z"]))
        try roundTrip([MPColor.red, .green])
        try roundTrip([MPLevel.low, .mid])
        try roundTrip([MPWithOptional(id: 1, note: nil), MPWithOptional(id: 2, note: "n")])
        try roundTrip([[MPPoint?.none, MPPoint(x: 1, y: 1)], []])
        try roundTrip(Int8.min)
        try roundTrip(Int16.min)
        try roundTrip(Int32.min)
        try roundTrip(UInt16.max)
        try roundTrip(UInt32.max)
        try roundTrip(UInt.max)
        try roundTrip(Float.greatestFiniteMagnitude)
        try roundTrip(-Double.infinity)
        try roundTrip(Double.leastNonzeroMagnitude)
        try roundTrip(Date(timeIntervalSince1970: 1_700_000_000.25))
        try roundTrip("")
        try roundTrip([Data(), Data([1])])
        try roundTrip(MPOuter(inner: [MPSmall(small: 1), MPSmall(small: 255)]))

        let nan = try MessagePackDecoder().decode(Double.self, from: MessagePackEncoder().encode(Double.nan))
        XCTAssertTrue(nan.isNaN)
        let nanFloat = try MessagePackDecoder().decode(Float.self, from: MessagePackEncoder().encode(Float.nan))
        XCTAssertTrue(nanFloat.isNaN)
    }

    func testMapKeyKinds() throws {
        let encoder = MessagePackEncoder()
        XCTAssertEqual(try encoder.encode(["5": 1]), [0x81, 0xa1, 0x35, 0x01])  // numeric String key stays a str
        XCTAssertEqual(try encoder.encode([5: 1]), [0x81, 0x05, 0x01])
        XCTAssertEqual(try encoder.encode([-1: 1] as [Int: Int]?), [0x81, 0xff, 0x01])
        XCTAssertEqual(try encoder.encode(MPIntCodingKeys(a: 1)), [0x81, 0xa1, 0x61, 0x01])
        let withMap = MPWithIntMap(m: [7: "x"], o: [0: true])
        XCTAssertEqual(try encoder.encode(withMap), [0x82, 0xa1, 0x6d, 0x81, 0x07, 0xa1, 0x78, 0xa1, 0x6f, 0x81, 0x00, 0xc3])
        try roundTrip(withMap)
        try roundTrip(MPIntCodingKeys(a: 3))
        // Int keys written as strs by another client still decode into [Int: V].
        XCTAssertEqual(try MessagePackDecoder().decode([Int: Int].self, from: [0x81, 0xa1, 0x35, 0x01]), [5: 1])
    }

    func testLargeContainersGetLongHeaders() throws {
        // array16 / array32 and map16 / map32 headers are patched in after the elements.
        let big = Array(0..<70_000)
        let bytes = try MessagePackEncoder().encode(big)
        XCTAssertEqual(Array(bytes.prefix(5)), [0xdd, 0x00, 0x01, 0x11, 0x70])
        XCTAssertEqual(try MessagePackDecoder().decode([Int].self, from: bytes), big)

        let strings = (0..<300).map { "s\($0)" }
        let wrapped = try MessagePackEncoder().encode([strings, ["tail"]])
        XCTAssertEqual(Array(wrapped.prefix(4)), [0x92, 0xdc, 0x01, 0x2c])
        XCTAssertEqual(try MessagePackDecoder().decode([[String]].self, from: wrapped), [strings, ["tail"]])

        let map = Dictionary(uniqueKeysWithValues: (0..<70_000).map { ("k\($0)", $0) })
        let mapBytes = try MessagePackEncoder().encode(map)
        XCTAssertEqual(mapBytes.first, 0xdf)
        XCTAssertEqual(try MessagePackDecoder().decode([String: Int].self, from: mapBytes), map)
    }

    func testAnyIntegerEncodingDecodesIntoAnyTypeItFits() throws {
        let five: [[UInt8]] = [
            [0x05], [0xcc, 0x05], [0xcd, 0x00, 0x05], [0xce, 0, 0, 0, 0x05], [0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05],
            [0xd0, 0x05], [0xd1, 0x00, 0x05], [0xd2, 0, 0, 0, 0x05], [0xd3, 0, 0, 0, 0, 0, 0, 0, 0x05],
        ]
        let decoder = MessagePackDecoder()
        for input in five {
            XCTAssertEqual(try decoder.decode(UInt8.self, from: input), 5, hex(input))
            XCTAssertEqual(try decoder.decode(Int8.self, from: input), 5, hex(input))
            XCTAssertEqual(try decoder.decode(Int.self, from: input), 5, hex(input))
            XCTAssertEqual(try decoder.decode(UInt64.self, from: input), 5, hex(input))
            XCTAssertEqual(try decoder.decode(Double.self, from: input), 5.0, hex(input))
            XCTAssertEqual(try decoder.decode(Float.self, from: input), 5.0, hex(input))
        }
        let minusOne: [[UInt8]] = [[0xff], [0xd0, 0xff], [0xd1, 0xff, 0xff], [0xd2, 0xff, 0xff, 0xff, 0xff], [0xd3] + Array(repeating: 0xff, count: 8)]
        for input in minusOne {
            XCTAssertEqual(try decoder.decode(Int8.self, from: input), -1, hex(input))
            XCTAssertEqual(try decoder.decode(Int64.self, from: input), -1, hex(input))
            assertDecodingError(UInt.self, input)
        }
        XCTAssertEqual(try decoder.decode(Double.self, from: [0xca, 0x3f, 0xc0, 0x00, 0x00]), 1.5)
        XCTAssertEqual(try decoder.decode(Float.self, from: [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]), 1.5)
        assertDecodingError(Float.self, try MessagePackEncoder().encode(1e300))
        assertDecodingError(Int.self, [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) { error in
            XCTAssertNotNil(self.dataCorruptedContext(error), "\(error)")
        }
        // [UInt8] also accepts an array of small integers (e.g. from a client without bin).
        XCTAssertEqual(try decoder.decode([UInt8].self, from: [0x92, 0x01, 0xcc, 0xff]), [1, 255])
    }

    // MARK: Errors with coding paths

    func testIntegerOverflowReportsCodingPath() throws {
        // {"inner": [{"small": 1}, {"small": 300}]}
        let input: [UInt8] = [0x81, 0xa5] + Array("inner".utf8) + [0x92, 0x81, 0xa5] + Array("small".utf8) + [0x01, 0x81, 0xa5]
            + Array("small".utf8) + [0xcd, 0x01, 0x2c]
        assertDecodingError(MPOuter.self, input) { error in
            guard let context = self.dataCorruptedContext(error) else { return XCTFail("\(error)") }
            XCTAssertEqual(path(context.codingPath), ["inner", "[1]", "small"])
            XCTAssertTrue(context.debugDescription.contains("300"), context.debugDescription)
        }
        assertDecodingError(UInt8.self, [0xcd, 0x01, 0x2c])
        assertDecodingError([UInt8].self, [0x92, 0x01, 0xcd, 0x01, 0x2c]) { error in
            XCTAssertEqual(self.dataCorruptedContext(error).map { path($0.codingPath) }, ["[1]"])
        }
    }

    func testTypeMismatchAndMissingValues() throws {
        // {"x": "one", "y": 2}
        let wrongType: [UInt8] = [0x82, 0xa1, 0x78, 0xa3, 0x6f, 0x6e, 0x65, 0xa1, 0x79, 0x02]
        assertDecodingError(MPPoint.self, wrongType) { error in
            guard case .typeMismatch(_, let context) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path(context.codingPath), ["x"])
        }
        // {"x": nil, "y": 2}
        assertDecodingError(MPPoint.self, [0x82, 0xa1, 0x78, 0xc0, 0xa1, 0x79, 0x02]) { error in
            guard case .valueNotFound(_, let context) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path(context.codingPath), ["x"])
        }
        // {"y": 2}
        assertDecodingError(MPPoint.self, [0x81, 0xa1, 0x79, 0x02]) { error in
            guard case .keyNotFound(let key, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(key.stringValue, "x")
        }
        assertDecodingError(MPPoint.self, [0x92, 0x01, 0x02]) { error in
            guard case .typeMismatch = error else { return XCTFail("\(error)") }
        }
        assertDecodingError(String.self, [0xc4, 0x01, 0x41])  // bin is not a str
        assertDecodingError(String.self, [0xa2, 0xc3, 0x28])  // invalid UTF-8
        assertDecodingError(Bool.self, [0x01])
        assertDecodingError([Int].self, [0x92, 0x01]) { error in
            XCTAssertNotNil(self.dataCorruptedContext(error), "truncated: \(error)")
        }
        // Optional fields: nil and absent both decode as nil.
        XCTAssertEqual(try MessagePackDecoder().decode(MPWithOptional.self, from: [0x82, 0xa2, 0x69, 0x64, 0x07, 0xa4] + Array("note".utf8) + [0xc0]),
                       MPWithOptional(id: 7, note: nil))
    }

    func testEncoderMisuseThrowsInsteadOfWritingWrongBytes() {
        XCTAssertThrowsError(try MessagePackEncoder().encode(MPInterleaved())) { error in
            guard case EncodingError.invalidValue = error else { return XCTFail("\(error)") }
        }
    }

    // MARK: Hostile input

    func testMemoryBombIsRejectedBeforeAllocation() {
        // array32 claiming 2^32-1 elements in a 10-byte buffer.
        let arrayBomb: [UInt8] = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05]
        assertDecodingError([Int].self, arrayBomb) { error in
            guard let context = self.dataCorruptedContext(error) else { return XCTFail("\(error)") }
            XCTAssertTrue(context.debugDescription.contains("4294967295"), context.debugDescription)
        }
        let mapBomb: [UInt8] = [0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05]
        assertDecodingError([String: Int].self, mapBomb)
        // A bomb nested inside an otherwise valid value.
        assertDecodingError([[Int]].self, [0x92, 0x90, 0xdc, 0xff, 0xff, 0x01])
        // A map whose pairs would need more bytes than remain (3 pairs, 5 bytes).
        assertDecodingError([Int: Int].self, [0x83, 0x01, 0x02, 0x03, 0x04, 0x05])
    }

    func testLengthsPastTheEndAreRejected() {
        assertDecodingError(String.self, [0xa5, 0x61, 0x62])
        assertDecodingError(String.self, [0xdb, 0x00, 0x01, 0x00, 0x00, 0x61])
        assertDecodingError(String.self, [0xdb, 0xff, 0xff, 0xff])  // length field itself truncated
        assertDecodingError([UInt8].self, [0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00])
        assertDecodingError(Int.self, [0xc7, 0x10, 0x01, 0x00])  // ext8
        assertDecodingError(Double.self, [0xcb, 0x00, 0x00])
        assertDecodingError(Int.self, [])
        assertDecodingError(Int.self, [0xc1])
        assertDecodingError(Int.self, [0x01, 0x02]) { error in  // trailing bytes
            XCTAssertNotNil(self.dataCorruptedContext(error))
        }
    }

    func testDeepNestingIsRejected() throws {
        let deep = [UInt8](repeating: 0x91, count: 1000) + [0x01]
        assertDecodingError([Int].self, deep) { error in
            guard let context = self.dataCorruptedContext(error) else { return XCTFail("\(error)") }
            XCTAssertTrue(context.debugDescription.contains("deeper"), context.debugDescription)
        }
        // The default limit (32, msgpack-c's own) accepts 32 levels and rejects 33.
        XCTAssertEqual(MessagePackDecoder().maxDepth, 32)
        let ok = [UInt8](repeating: 0x91, count: 31) + [0x90]
        XCTAssertNoThrow(try MessagePackDecoder().decode(Nest.self, from: ok))
        assertDecodingError(Nest.self, [UInt8](repeating: 0x91, count: 32) + [0x90])
        var decoder = MessagePackDecoder()
        decoder.maxDepth = 1000  // cannot exceed msgpack-c's limit
        XCTAssertThrowsError(try decoder.decode(Nest.self, from: [UInt8](repeating: 0x91, count: 32) + [0x90]))
        // A configured lower limit.
        assertDecodingError([[Int]].self, [0x91, 0x91, 0x01], maxDepth: 1)
        decoder.maxDepth = 2
        XCTAssertEqual(try decoder.decode([[Int]].self, from: [0x91, 0x91, 0x01]), [[1]])
    }

    /// An array nested in arrays to any depth, ending in an empty array.
    private indirect enum Nest: Decodable {
        case leaf
        case node(Nest)
        init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            self = container.isAtEnd ? .leaf : .node(try container.decode(Nest.self))
        }
    }

    func testEveryTruncationIsADecodingError() throws {
        let full = try MessagePackEncoder().encode(MPNested.sample)
        for length in 0..<full.count {
            // Copy into an exactly-sized allocation so an over-read would touch foreign memory.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 1)
            defer { buffer.deallocate() }
            buffer.copyBytes(from: full[0..<length])
            XCTAssertThrowsError(try MessagePackDecoder().decode(MPNested.self, from: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))) {
                XCTAssertTrue($0 is DecodingError, "length \(length): \($0)")
            }
        }
        XCTAssertEqual(try MessagePackDecoder().decode(MPNested.self, from: full), MPNested.sample)
    }

    // MARK: Internal hot-path API

    func testWriterIsReusableAndEncodesAfterAPrefix() throws {
        let writer = MessagePackWriter(initialCapacity: 16)
        let encoder = MessagePackEncoder()
        for round in 0..<3 {
            writer.reset()
            // A response envelope [1, msgid, nil, result] built around the encoded result.
            writer.packArrayHeader(4)
            writer.packUInt(1)
            writer.packUInt(UInt64(round))
            writer.packNil()
            try encoder.encode(MPNested.sample, into: writer)
            let expected = try [0x94, 0x01, UInt8(round), 0xc0] + MessagePackEncoder().encode(MPNested.sample)
            XCTAssertEqual(writer.bytes, expected)
            writer.withUnsafeBytes { XCTAssertEqual($0.count, expected.count) }
        }
        // Pre-encoded bytes can be spliced in verbatim.
        writer.reset()
        writer.packArrayHeader(2)
        try MessagePackEncoder().encode("x").withUnsafeBytes { writer.appendRaw($0) }
        writer.packBool(true)
        XCTAssertEqual(try MessagePackDecoder().decode([MPScalar].self, from: writer.bytes), [.string("x"), .bool(true)])
        // A failed encode leaves the writer as it was.
        writer.reset()
        writer.packUInt(7)
        XCTAssertThrowsError(try encoder.encode(MPThrows(), into: writer))
        XCTAssertThrowsError(try encoder.encodeParams(MPThrows(), into: writer))
        XCTAssertEqual(writer.bytes, [0x07])
    }

    func testDecodeFirstParam() throws {
        let reader = MessagePackReader()
        let decoder = MessagePackDecoder()
        for x in 0..<3 {
            let point = try MessagePackEncoder().encode(MPPoint(x: x, y: 2))
            let input: [UInt8] = [0x93] + point + [0x05, 0xc0]  // extra params are ignored
            XCTAssertEqual(try input.withUnsafeBytes { try decoder.decodeFirstParam(MPPoint.self, from: $0, using: reader) },
                           MPPoint(x: x, y: 2))
            let pair: [UInt8] = [0x92] + point + point
            XCTAssertEqual(try pair.withUnsafeBytes { try decoder.decode([MPPoint].self, from: $0, using: reader) },
                           [MPPoint(x: x, y: 2), MPPoint(x: x, y: 2)])
        }
        let empty: [UInt8] = [0x90], notArray: [UInt8] = [0x05], wrongType: [UInt8] = [0x91, 0xa1, 0x61]
        let bomb: [UInt8] = [0xdd, 0xff, 0xff, 0xff, 0xff]
        XCTAssertThrowsError(try empty.withUnsafeBytes { try decoder.decodeFirstParam(Int.self, from: $0, using: reader) }) {
            guard case DecodingError.valueNotFound = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try notArray.withUnsafeBytes { try decoder.decodeFirstParam(Int.self, from: $0, using: reader) }) {
            guard case DecodingError.typeMismatch = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try wrongType.withUnsafeBytes { try decoder.decodeFirstParam(Int.self, from: $0) }) {
            guard case DecodingError.typeMismatch(_, let context) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(path(context.codingPath), ["[0]"])
        }
        XCTAssertThrowsError(try bomb.withUnsafeBytes { try decoder.decodeFirstParam(Int.self, from: $0, using: reader) })
    }
}

/// The validator's rules are the C core's (msgpack_rules.h); what it reports is turned into
/// these messages, each naming what is wrong and where.
final class MessagePackValidatorMessageTests: XCTestCase {
    private func message(_ bytes: [UInt8], maxDepth: Int = 32) -> String? {
        bytes.withUnsafeBytes { raw -> String? in
            do throws(MessagePackValidationError) {
                _ = try MessagePackValidator.validate(raw, maxDepth: maxDepth)
                return nil
            } catch {
                return error.message
            }
        }
    }

    func testEachProblemIsNamedWithItsOffset() {
        XCTAssertEqual(message([]), "Empty input: expected a MessagePack value.")
        XCTAssertEqual(message([0x92, 0x91, 0x01]), "Truncated MessagePack input: a value runs past the end of 3 bytes.")
        XCTAssertEqual(message([0x91, 0xdb, 0xff]), "Truncated MessagePack input: a str32 length runs past the end of 3 bytes.")
        XCTAssertEqual(message([0x91, 0xc1]), "Invalid MessagePack byte 0xc1 at offset 1.")
        XCTAssertEqual(message([0x91, 0xa5, 0x61]), "MessagePack value at offset 1 claims 5 payload bytes but only 1 remain.")
        XCTAssertEqual(message([0x91, 0x91, 0x01], maxDepth: 1), "MessagePack input nests containers deeper than the limit of 1.")
        XCTAssertEqual(message([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
                       "MessagePack array claims 4294967295 elements at offset 0 but only 1 bytes remain.")
        XCTAssertEqual(message([0x91, 0x83, 0x01, 0x02]), "MessagePack map claims 3 pairs at offset 1 but only 2 bytes remain.")
    }

    func testEmptyContainersCountAsALevel() {
        XCTAssertEqual(message([0x90], maxDepth: 0), "MessagePack input nests containers deeper than the limit of 0.")
        XCTAssertNil(message([0x91, 0x90], maxDepth: 2))
        XCTAssertNotNil(message([0x91, 0x90], maxDepth: 1))
    }

    func testAValueEndsWhereItsBytesDo() throws {
        let bytes: [UInt8] = [0x92, 0x01, 0xa1, 0x61, 0xff]  // [1, "a"] and a trailing byte
        let n = try bytes.withUnsafeBytes { try MessagePackValidator.validate($0, maxDepth: 32) }
        XCTAssertEqual(n, 4)
    }
}
