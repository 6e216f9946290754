// A reply of a scalar type (bytes, a string, a number, a bool) read straight from its raw
// MessagePack bytes: one header is all there is to parse, so no msgpack-c tree is built (the
// core's `crpc_message_value` would unpack one into a zone for every reply).
//
// Only the encodings a value of the expected kind comes in are handled, each turned into the
// very `msgpack_object` msgpack-c's unpacker would build, and then read by the same
// `MessagePackUnbox.scalar` as a tree node. Anything else (a type mismatch, nil, a container,
// bytes that do not end where the value does) returns nil, and the caller takes the tree
// path, which reports it as usual.

internal import CMsgPack

enum MessagePackScalarHeader {
    /// The object msgpack-c would unpack from `bytes`, when they hold exactly one value of an
    /// encoding `kind` reads; nil otherwise.
    static func object(_ bytes: UnsafeRawBufferPointer, for kind: MessagePackScalar) -> msgpack_object? {
        guard let first = bytes.first else { return nil }
        switch kind {
        case .bytes, .data: return sizedBody(bytes, first, isString: false)
        case .string: return sizedBody(bytes, first, isString: true)
        case .bool:
            guard bytes.count == 1, first == 0xc2 || first == 0xc3 else { return nil }
            var o = msgpack_object()
            o.type = MSGPACK_OBJECT_BOOLEAN
            o.via.boolean = first == 0xc3
            return o
        case .double, .float: return float(bytes, first) ?? integer(bytes, first)
        case .int, .int64, .uint64, .int32, .uint32, .uint, .int16, .uint16, .int8, .uint8:
            return integer(bytes, first)
        }
    }

    /// A big-endian unsigned integer of `width` bytes at `offset`, when the bytes hold it.
    private static func load(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ width: Int) -> UInt64? {
        guard bytes.count >= offset + width else { return nil }
        var value: UInt64 = 0
        for i in offset..<offset + width { value = value << 8 | UInt64(bytes[i]) }
        return value
    }

    /// A str (`isString`) or bin: its header (fix, 8, 16 or 32-bit length, sized by the
    /// shared reader `crpc_mp_sized_header`), then exactly the rest of the input as its body.
    private static func sizedBody(_ bytes: UnsafeRawBufferPointer, _ first: UInt8, isString: Bool) -> msgpack_object? {
        let header = Int(crpc_mp_sized_header(first, isString ? 0 : 1))
        guard header > 0 else { return nil }
        let size = header == 1 ? UInt64(first & 0x1f) : load(bytes, 1, header - 1)
        guard let size, UInt64(bytes.count) == UInt64(header) + size else { return nil }
        let start = bytes.baseAddress.map { ($0 + header).assumingMemoryBound(to: CChar.self) }
        var o = msgpack_object()
        if isString {
            o.type = MSGPACK_OBJECT_STR
            o.via.str = msgpack_object_str(size: UInt32(size), ptr: start)
        } else {
            o.type = MSGPACK_OBJECT_BIN
            o.via.bin = msgpack_object_bin(size: UInt32(size), ptr: start)
        }
        return o
    }

    /// Integers as msgpack-c types them: non-negative ones (of any encoding) are positive
    /// integers in `u64`, negative ones negative integers in `i64`.
    private static func integer(_ bytes: UnsafeRawBufferPointer, _ first: UInt8) -> msgpack_object? {
        let width: Int, signed: Bool
        switch first {
        case 0x00...0x7f: return bytes.count == 1 ? positive(UInt64(first)) : nil
        case 0xe0...0xff: return bytes.count == 1 ? negative(Int64(Int8(bitPattern: first))) : nil
        case 0xcc...0xcf: signed = false
        case 0xd0...0xd3: signed = true
        default: return nil
        }
        width = Int(crpc_mp_int_width(first))  // the shared reader's widths
        guard bytes.count == 1 + width, let raw = load(bytes, 1, width) else { return nil }
        guard signed else { return positive(raw) }
        let shift = UInt64(64 - 8 * width)
        let value = Int64(bitPattern: raw << shift) >> Int64(shift) // sign-extended
        return value < 0 ? negative(value) : positive(UInt64(value))
    }

    private static func positive(_ value: UInt64) -> msgpack_object {
        var o = msgpack_object()
        o.type = MSGPACK_OBJECT_POSITIVE_INTEGER
        o.via.u64 = value
        return o
    }

    private static func negative(_ value: Int64) -> msgpack_object {
        var o = msgpack_object()
        o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER
        o.via.i64 = value
        return o
    }

    /// float32 keeps its type (msgpack-c widens the value into `f64`); float64 as is.
    private static func float(_ bytes: UnsafeRawBufferPointer, _ first: UInt8) -> msgpack_object? {
        var o = msgpack_object()
        switch first {
        case 0xca:
            guard bytes.count == 5, let raw = load(bytes, 1, 4) else { return nil }
            o.type = MSGPACK_OBJECT_FLOAT32
            o.via.f64 = Double(Float(bitPattern: UInt32(raw)))
        case 0xcb:
            guard bytes.count == 9, let raw = load(bytes, 1, 8) else { return nil }
            o.type = MSGPACK_OBJECT_FLOAT64
            o.via.f64 = Double(bitPattern: raw)
        default: return nil
        }
        return o
    }
}
