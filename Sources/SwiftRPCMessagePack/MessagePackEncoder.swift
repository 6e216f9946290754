// MessagePackEncoder: the public face of SwiftRPC's MessagePack `Codable` encoder, plus the
// internal entry points the RPC layer uses on its hot path (encode into a reusable writer).
//
// Mapping (byte-compatible with Python's `msgpack.packb(..., use_bin_type=True)`):
//   struct/class -> map keyed by field name (str); enum with raw value -> its raw value;
//   nil -> nil (a nil optional *field* is left out of its map, as JSONEncoder does);
//   array/set -> array; [String: V] -> map with str keys; [Int: V] -> map with int keys;
//   [UInt8], Data -> bin; String -> str; Bool -> bool; Float -> float32; Double -> float64;
//   every integer type -> the smallest MessagePack int that holds the value.

/// Encodes `Encodable` values as MessagePack.
///
/// ```swift
/// struct Point: Codable { var x: Int; var y: Int }
/// let bytes = try MessagePackEncoder().encode(Point(x: 1, y: 2))
/// // bytes == [0x82, 0xa1, 0x78, 0x01, 0xa1, 0x79, 0x02]   ({"x": 1, "y": 2})
/// ```
///
/// Structs become maps keyed by field name, `[UInt8]` and `Data` become MessagePack `bin`,
/// `Float` is written as float32 and `Double` as float64, and integers take their most compact
/// encoding. A `nil` optional property is omitted from its map, as with `JSONEncoder`.
/// The encoder is a value type with no state; it is safe to share between tasks.
public struct MessagePackEncoder: Sendable {
    /// Creates an encoder.
    public init() {}

    /// Returns the MessagePack encoding of `value`.
    ///
    /// - Throws: `EncodingError.invalidValue` if `value`'s `encode(to:)` misuses its containers in
    ///   a way a streaming encoder cannot honor (writing to a container after a later sibling was
    ///   started), or any error `value` throws itself.
    public func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let writer = MessagePackWriter(initialCapacity: 128)
        try encode(value, into: writer)
        return writer.bytes
    }

    // MARK: Internal hot path

    /// Appends the encoding of `value` to `writer`, e.g. a reply's result after its envelope
    /// prefix. On error the writer is left as it was before the call.
    package func encode<T: Encodable>(_ value: T, into writer: MessagePackWriter) throws {
        // A scalar (a string, a number, bytes) needs none of the container machinery.
        if writer.packScalar(value) { return }
        let start = writer.count
        do {
            var state = writer.encoderState()
            // A value that encodes itself through the RPC layer's own writer while that writer is
            // mid-encode gets a private state rather than corrupting the shared one.
            if state.isActive { state = MessagePackEncoderState(writer: writer) }
            try state.encodeTopLevel(value)
        } catch {
            writer.truncate(to: start)
            throw error
        }
    }

    /// Appends `[value]`, the params array of a call with one argument, to `writer`. On error the
    /// writer is left as it was before the call.
    package func encodeParams<T: Encodable>(_ value: T, into writer: MessagePackWriter) throws {
        let start = writer.count
        writer.packArrayHeader(1)
        do {
            try encode(value, into: writer)
        } catch {
            writer.truncate(to: start)
            throw error
        }
    }

    // MARK: Params in this thread's writer (the client's per-call path)

    /// Encodes `[args]`, the params of a call with one argument, into this thread's writer
    /// (a fresh one while it is in use) and runs `body` with the bytes. One call across the
    /// module boundary per call sent: the writer is borrowed, not retained.
    package func withParams<Args: Encodable, R>(
        _ args: Args, _ body: (UnsafeRawBufferPointer) -> R
    ) throws -> R {
        try Self.withThreadWriter { writer in
            try encodeParams(args, into: writer)
            return writer.withUnsafeBytes(body)
        }
    }

    /// `withParams` for an argument that is raw bytes: `[bin]`, as the Codable path writes
    /// it, without going through it.
    package static func withBytesParams<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) -> R) -> R {
        withThreadWriter { writer in
            writer.packArrayHeader(1)
            bytes.withUnsafeBytes { writer.packBinary($0) }
            return writer.withUnsafeBytes(body)
        }
    }

    /// Runs `body` with this thread's writer, emptied (a fresh one if it is in use).
    @inline(__always)
    private static func withThreadWriter<R>(_ body: (MessagePackWriter) throws -> R) rethrows -> R {
        try ThreadScratch.withCurrent { scratch in
            guard let writer = scratch.beginWriting() else { return try body(MessagePackWriter(initialCapacity: 256)) }
            defer { scratch.endWriting() }
            return try body(writer)
        }
    }
}
