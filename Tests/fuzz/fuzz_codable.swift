// fuzz_codable.swift — libFuzzer target for the Swift MessagePack Codable decoder, built by
// scripts/fuzz.sh with `swiftc -sanitize=fuzzer,address` together with the coder's sources.
//
// Invariants: no crash, trap or over-read on any input (every problem must be a thrown
// DecodingError); no allocation bomb gets through (the fuzzer's RSS limit); whatever decodes
// re-encodes and decodes back to an equal value.
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
    return 0
}
