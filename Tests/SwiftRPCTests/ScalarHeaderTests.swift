// Scalar replies are read from their raw bytes without msgpack-c's unpacker
// (Sources/SwiftRPCMessagePack/MessagePackScalarHeader.swift). Whatever that reader accepts
// must be exactly the object msgpack_unpack builds from the same bytes; everything else
// (other encodings, truncated or trailing bytes) it must leave to the tree path.

import CMsgPack
import XCTest

@testable import SwiftRPC
@testable import SwiftRPCMessagePack

final class ScalarHeaderTests: XCTestCase {
    /// Every kind a scalar reply can have.
    private let kinds: [MessagePackScalar] = [
        .string, .int, .double, .bool, .bytes, .data, .int64, .uint64, .int32, .uint32, .uint,
        .float, .int16, .uint16, .int8, .uint8,
    ]

    /// Each scalar encoding at its edges, canonical or not (a small number as int64, a short
    /// string as str16), plus containers and nil, which the reader must refuse.
    private var encodings: [[UInt8]] {
        var all: [[UInt8]] = [
            [0x00], [0x01], [0x7f], [0xe0], [0xff], [0xc0], [0xc2], [0xc3],
            [0xcc, 0xff], [0xcd, 0x01, 0x00], [0xce, 0xff, 0xff, 0xff, 0xff],
            [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], [0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
            [0xd0, 0x80], [0xd0, 0x05], [0xd1, 0x80, 0x00], [0xd1, 0x00, 0x07],
            [0xd2, 0x80, 0, 0, 0], [0xd2, 0, 0, 0, 9], [0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            [0xd3, 0, 0, 0, 0, 0, 0, 0, 0x2a], [0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            [0xca, 0x3f, 0xc0, 0, 0], [0xca, 0x7f, 0x80, 0, 0], [0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
            [0xa0], [0xa3, 0x61, 0x62, 0x63], [0xd9, 0x02, 0x68, 0x69], [0xda, 0x00, 0x01, 0x7a],
            [0xdb, 0, 0, 0, 2, 0xc3, 0xa9], [0xa2, 0xff, 0xfe], // not UTF-8: the unboxing decides
            [0xc4, 0x00], [0xc4, 0x03, 1, 2, 3], [0xc5, 0x00, 0x02, 9, 8], [0xc6, 0, 0, 0, 1, 7],
            [0x91, 0x01], [0x80], [0x92, 0xcc, 0x01, 0x02], // containers: the tree's business
        ]
        // Truncated and overlong forms of every multi-byte encoding.
        for bytes in all where bytes.count > 1 {
            all.append(Array(bytes.dropLast()))
            all.append(bytes + [0x00])
        }
        return all
    }

    func testWhatTheReaderAcceptsIsWhatMsgpackUnpacks() throws {
        var accepted = 0
        for bytes in encodings {
            let reference = unpacked(bytes)
            for kind in kinds {
                // The object, and where its str/bin body starts in `bytes`.
                let read = bytes.withUnsafeBytes { raw -> (msgpack_object, Int?)? in
                    guard let object = MessagePackScalarHeader.object(raw, for: kind) else { return nil }
                    let body = object.type == MSGPACK_OBJECT_STR ? UnsafeRawPointer(object.via.str.ptr)
                        : object.type == MSGPACK_OBJECT_BIN ? UnsafeRawPointer(object.via.bin.ptr) : nil
                    return (object, body.map { $0 - raw.baseAddress! })
                }
                guard let (object, bodyOffset) = read else { continue }
                accepted += 1
                let context = "\(bytes.map { String($0, radix: 16) }) as \(kind)"
                guard let reference else {
                    XCTFail("\(context): accepted, but msgpack_unpack does not unpack exactly these bytes")
                    continue
                }
                XCTAssertEqual(object.type, reference.object.type, context)
                switch object.type {
                case MSGPACK_OBJECT_POSITIVE_INTEGER: XCTAssertEqual(object.via.u64, reference.object.via.u64, context)
                case MSGPACK_OBJECT_NEGATIVE_INTEGER: XCTAssertEqual(object.via.i64, reference.object.via.i64, context)
                case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64:
                    XCTAssertEqual(object.via.f64.bitPattern, reference.object.via.f64.bitPattern, context)
                case MSGPACK_OBJECT_BOOLEAN: XCTAssertEqual(object.via.boolean, reference.object.via.boolean, context)
                case MSGPACK_OBJECT_STR:
                    XCTAssertEqual(object.via.str.size, reference.object.via.str.size, context)
                    if object.via.str.size > 0 { XCTAssertEqual(bodyOffset, reference.strOffset, context) } // else unread
                case MSGPACK_OBJECT_BIN:
                    XCTAssertEqual(object.via.bin.size, reference.object.via.bin.size, context)
                    if object.via.bin.size > 0 { XCTAssertEqual(bodyOffset, reference.binOffset, context) }
                default: XCTFail("\(context): the reader made a \(object.type)")
                }
            }
        }
        XCTAssertGreaterThan(accepted, 60) // the reader takes the common encodings, not just a few
    }

    func testEachKindTakesOnlyItsOwnEncodings() throws {
        func accepts(_ bytes: [UInt8], _ kind: MessagePackScalar) -> Bool {
            bytes.withUnsafeBytes { MessagePackScalarHeader.object($0, for: kind) } != nil
        }
        XCTAssertTrue(accepts([0xc4, 0x01, 0x07], .bytes))
        XCTAssertFalse(accepts([0xc4, 0x01, 0x07], .string)) // a mismatch goes to the tree path
        XCTAssertFalse(accepts([0xa1, 0x61], .bytes))
        XCTAssertTrue(accepts([0xa1, 0x61], .string))
        XCTAssertTrue(accepts([0x05], .double))              // ints read as floats, as in the tree
        XCTAssertFalse(accepts([0xca, 0, 0, 0, 0], .int))
        XCTAssertFalse(accepts([0xc0], .int))                // nil: the tree path says valueNotFound
        XCTAssertFalse(accepts([0x91, 0x01], .bytes))        // [UInt8] as an array of ints
    }

    /// Scalar replies through a live connection: the raw-bytes path, and a mismatch (a
    /// string where an Int is expected) still failing with the decoder's message.
    func testScalarRepliesEndToEnd() async throws {
        let server = RPCServer()
        try server.register(RPCMethod<Int, Int>("T.Int")) { n, _ in -n }
        try server.register(RPCMethod<String, String>("T.Text")) { s, _ in s + "!" }
        try server.register(RPCMethod<[UInt8], [UInt8]>("T.Bytes")) { b, _ in b.reversed() }
        try server.register(RPCMethod<Double, Double>("T.Half")) { d, _ in d / 2 }
        try server.register(RPCMethod<Bool, Bool>("T.Not")) { b, _ in !b }
        try server.register(RPCMethod<Int, String>("T.Mismatch")) { n, _ in "\(n)" }
        let port = try server.start()
        defer { server.stop() }
        let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }
        let negated = try await client.call(RPCMethod<Int, Int>("T.Int"), 1 << 40)
        XCTAssertEqual(negated, -(1 << 40))
        let text = try await client.call(RPCMethod<String, String>("T.Text"), "é")
        XCTAssertEqual(text, "é!")
        let bytes = try await client.call(RPCMethod<[UInt8], [UInt8]>("T.Bytes"), Array(0..<200))
        XCTAssertEqual(bytes, Array((0..<200).reversed()))
        let half = try await client.call(RPCMethod<Double, Double>("T.Half"), 3)
        XCTAssertEqual(half, 1.5)
        let not = try await client.call(RPCMethod<Bool, Bool>("T.Not"), false)
        XCTAssertTrue(not)
        do {
            _ = try await client.call(RPCMethod<Int, Int>("T.Mismatch"), 7)
            XCTFail("a string reply decoded as Int")
        } catch {
            XCTAssertEqual(error.code, .internal)
            XCTAssertTrue(error.message.contains("does not decode as Int"), error.message)
        }
    }

    // MARK: Helpers

    private struct Reference {
        var object: msgpack_object
        var strOffset: Int?
        var binOffset: Int?
    }

    /// What msgpack_unpack builds from `bytes`, when they hold exactly one value.
    private func unpacked(_ bytes: [UInt8]) -> Reference? {
        var zone = msgpack_zone()
        guard msgpack_zone_init(&zone, 4096) else { return nil }
        defer { msgpack_zone_destroy(&zone) }
        return bytes.withUnsafeBytes { raw -> Reference? in
            var object = msgpack_object()
            var used = 0
            let rc = msgpack_unpack(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count, &used, &zone, &object)
            guard rc == MSGPACK_UNPACK_SUCCESS, used == raw.count else { return nil }
            var reference = Reference(object: object)
            if object.type == MSGPACK_OBJECT_STR { reference.strOffset = UnsafeRawPointer(object.via.str.ptr).map { $0 - raw.baseAddress! } }
            if object.type == MSGPACK_OBJECT_BIN { reference.binOffset = UnsafeRawPointer(object.via.bin.ptr).map { $0 - raw.baseAddress! } }
            return reference
        }
    }
}
