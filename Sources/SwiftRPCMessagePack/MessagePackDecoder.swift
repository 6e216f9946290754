// MessagePackDecoder: the public face of SwiftRPC's MessagePack `Codable` decoder, plus the
// internal entry points the RPC layer uses on its hot path (decode with a reusable reader, decode
// the first element of a params array).
//
// Every decode: validate the untrusted bytes (MessagePackValidator), unpack them once with
// msgpack-c into a zone (MessagePackReader), walk the tree (MessagePackDecoderState).

internal import CMsgPack

/// Decodes `Decodable` values from MessagePack.
///
/// ```swift
/// struct Point: Codable { var x: Int; var y: Int }
/// let point = try MessagePackDecoder().decode(Point.self, from: [0x82, 0xa1, 0x78, 0x01, 0xa1, 0x79, 0x02])
/// // point == Point(x: 1, y: 2)
///
/// var strict = MessagePackDecoder()
/// strict.maxDepth = 8        // reject input nested more than 8 containers deep
/// ```
///
/// Input is untrusted: before anything is allocated for it, the bytes are checked so that no
/// container claims more elements than the input could hold, no length runs past the end, and
/// nesting stays within ``maxDepth``. Every problem, including a value of the wrong type or an
/// integer that does not fit its Swift type, is thrown as a `DecodingError` with the coding path.
///
/// Any MessagePack integer encoding decodes into any Swift integer type the value fits; `Double`
/// and `Float` also accept integers; `[UInt8]` and `Data` read `bin`. The decoder is a value type
/// with no shared state; it is safe to share between tasks.
public struct MessagePackDecoder: Sendable {
    /// The deepest nesting of arrays and maps accepted; deeper input is rejected with
    /// `DecodingError.dataCorrupted`. A scalar at top level is depth 0, `[1]` is depth 1.
    ///
    /// Defaults to 32, which is also the most msgpack-c's unpacker can handle (its parse stack is
    /// fixed at 32 levels), so larger values act as 32.
    public var maxDepth: Int = MessagePackReader.msgpackDepthLimit

    /// Creates a decoder with the default limits.
    public init() {}

    /// Decodes a value of type `type` from `bytes`, which must hold exactly one MessagePack value.
    ///
    /// - Throws: `DecodingError` if the bytes are malformed, truncated, followed by extra bytes,
    ///   nested deeper than ``maxDepth``, or do not match `type`.
    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try bytes.withUnsafeBytes { try decode(type, from: $0) }
    }

    /// Decodes a value of type `type` from the memory `bytes`, which must hold exactly one
    /// MessagePack value. The bytes are only read during the call.
    ///
    /// - Throws: `DecodingError` as the `[UInt8]` overload.
    public func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws -> T {
        try decode(type, from: bytes, using: MessagePackReader(chunkSize: 1024))
    }

    // MARK: Internal hot path

    /// Decodes a bare value (e.g. a reply's result) from `bytes`, reusing `reader`'s memory.
    func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, using reader: MessagePackReader) throws -> T {
        try reader.withTree(bytes, maxDepth: maxDepth) { root, state in
            try state.decodeValue(type, at: root, depth: 0)
        }
    }

    /// Decodes element 0 of the params array in `bytes` (exactly one MessagePack array) as `T`,
    /// reusing `reader`'s memory. Further elements are ignored, as the wire protocol requires.
    ///
    /// - Throws: `DecodingError.typeMismatch` if `bytes` is not an array,
    ///   `DecodingError.valueNotFound` if it is empty, or any error decoding element 0 (whose
    ///   coding path starts with "Index 0").
    func decodeFirstParam<T: Decodable>(
        _ type: T.Type, from bytes: UnsafeRawBufferPointer, using reader: MessagePackReader
    ) throws -> T {
        try reader.withTree(bytes, maxDepth: maxDepth) { root, state in
            let first = try Self.firstParam(of: root, as: type)
            return try state.decodeValue(type, at: first, depth: 0, extra: [], key: MessagePackKey(index: 0))
        }
    }

    /// Element 0 of the params array `root`, or the error that says why there is none.
    static func firstParam<T>(of root: MessagePackObject, as type: T.Type) throws -> MessagePackObject {
        guard root.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw DecodingError.typeMismatch([Any].self, .init(
                codingPath: [],
                debugDescription: "Expected the params array but found MessagePack \(MessagePackUnbox.typeName(root)) instead."))
        }
        guard root.pointee.via.array.size > 0, let first = root.pointee.via.array.ptr else {
            throw DecodingError.valueNotFound(type, .init(
                codingPath: [MessagePackKey(index: 0)], debugDescription: "The params array is empty; expected one argument."))
        }
        return UnsafePointer(first)
    }

    /// `decodeFirstParam(_:from:using:)` with a temporary reader.
    func decodeFirstParam<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws -> T {
        try decodeFirstParam(type, from: bytes, using: MessagePackReader(chunkSize: 1024))
    }
}
