// fuzz_codable.swift — libFuzzer target for the Swift MessagePack Codable decoder, built by
// scripts/fuzz.sh with `swiftc -sanitize=fuzzer,address` together with the coder's sources.
//
// Invariants: no crash, trap or over-read on any input (every problem must be a thrown
// DecodingError); no allocation bomb gets through (the fuzzer's RSS limit); whatever decodes
// re-encodes and decodes back to an equal value; whatever the raw scalar-reply reader
// (MessagePackScalarHeader) accepts is exactly what msgpack_unpack makes of the same bytes.
internal import CMsgPack
import Foundation

struct Shape: Codable, Equatable {
    enum Kind: String, Codable { case a, b, c }
    var id: Int
    var name: String?
    var kind: Kind?
    var values: [Double]
    var tags: [String: UInt8]
    var byKey: [Int: Bool]?
    var blob: Data?
    var children: [Shape]?
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let decoder = MessagePackDecoder()
    if let shape = try? decoder.decode(Shape.self, from: bytes) {
        guard let again = try? MessagePackEncoder().encode(shape),
              let back = try? decoder.decode(Shape.self, from: again),
              back == shape || shape.values.contains(where: \.isNaN) else { fatalError("round trip changed \(shape)") }
    }
    _ = try? decoder.decode([String: [Int64]].self, from: bytes)
    _ = try? decoder.decode([UInt8].self, from: bytes)
    _ = try? decoder.decode([[Int8?]].self, from: bytes)
    _ = try? decoder.decode(UInt64.self, from: bytes)
    checkScalarHeader(bytes)
    return 0
}

/// The raw reader agrees with msgpack-c on every input it accepts.
func checkScalarHeader(_ bytes: UnsafeRawBufferPointer) {
    let kinds: [MessagePackScalar] = [.string, .int, .double, .bool, .bytes, .float, .int8, .uint64]
    let accepted = kinds.compactMap { MessagePackScalarHeader.object(bytes, for: $0) }
    guard let object = accepted.first, let base = bytes.baseAddress else { return }
    var zone = msgpack_zone()
    guard msgpack_zone_init(&zone, 4096) else { return }
    defer { msgpack_zone_destroy(&zone) }
    var reference = msgpack_object()
    var used = 0
    let rc = msgpack_unpack(base.assumingMemoryBound(to: CChar.self), bytes.count, &used, &zone, &reference)
    guard rc == MSGPACK_UNPACK_SUCCESS, used == bytes.count, reference.type == object.type else {
        fatalError("the scalar reader accepted what msgpack_unpack reads otherwise: \(Array(bytes))")
    }
    let same: Bool
    switch object.type {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: same = object.via.u64 == reference.via.u64
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: same = object.via.i64 == reference.via.i64
    case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64: same = object.via.f64.bitPattern == reference.via.f64.bitPattern
    case MSGPACK_OBJECT_BOOLEAN: same = object.via.boolean == reference.via.boolean
    case MSGPACK_OBJECT_STR:
        same = object.via.str.size == reference.via.str.size
            && (object.via.str.size == 0 || object.via.str.ptr == reference.via.str.ptr)
    case MSGPACK_OBJECT_BIN:
        same = object.via.bin.size == reference.via.bin.size
            && (object.via.bin.size == 0 || object.via.bin.ptr == reference.via.bin.ptr)
    default: same = false
    }
    if !same { fatalError("the scalar reader and msgpack_unpack disagree on \(Array(bytes))") }
}
