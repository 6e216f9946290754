// MessagePackValidator: the check run on untrusted bytes before msgpack-c sees them.
//
// The rules are the C core's, in one place: `crpc_mp_check` in Sources/CMsgPack/msgpack_rules.h
// (msgpack-c's unpacker allocates `count * sizeof(msgpack_object)` as soon as it reads a
// container header, so a 5-byte array32 header claiming 2^32 elements would ask for ~100 GB).
// It rejects a container claiming more elements than there are bytes left, a str/bin/ext
// length or fixed-width field that runs past the end, nesting deeper than the limit (here
// each array or map, empty or not, is one level), and the never-used byte 0xc1. This file
// turns what it reports into the coder's error messages. On success the input is
// guaranteed to unpack with msgpack-c without a parse error.

internal import CMsgPack

/// Why the validator rejected its input.
struct MessagePackValidationError: Error {
    /// What is wrong, for `DecodingError.dataCorrupted`.
    let message: String
    /// Offset of the offending byte.
    let offset: Int
}

enum MessagePackValidator {
    /// Checks that `bytes` starts with one well-formed MessagePack value nested at most `maxDepth`
    /// containers deep.
    ///
    /// - Returns: the number of bytes that value occupies (the caller decides about trailing bytes).
    /// - Throws: `MessagePackValidationError` describing the first problem found.
    static func validate(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int
    ) throws(MessagePackValidationError) -> Int {
        let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
        // The walk tracks at most CRPC_MP_DEPTH_LIMIT levels (the reader's own limit is lower).
        let depth = min(max(maxDepth, 0), Int(CRPC_MP_DEPTH_LIMIT))
        var why = crpc_mp_problem()
        let n = crpc_mp_check(base, base == nil ? 0 : bytes.count, UInt32(depth), UInt32(CRPC_MP_EMPTY_CONTAINERS_NEST), &why)
        if n >= 0 { return n }
        throw error(why, bytes.count, maxDepth: depth)
    }

    /// The coder's message for what `crpc_mp_check` refused.
    private static func error(_ why: crpc_mp_problem, _ end: Int, maxDepth: Int) -> MessagePackValidationError {
        let start = Int(why.offset)
        switch why.kind {
        case CRPC_MP_EMPTY:
            return .init(message: "Empty input: expected a MessagePack value.", offset: 0)
        case CRPC_MP_TRUNCATED_VALUE:
            return .init(message: "Truncated MessagePack input: a value runs past the end of \(end) bytes.", offset: start)
        case CRPC_MP_TRUNCATED_HEADER:
            return .init(message: "Truncated MessagePack input: \(field(why.byte)) runs past the end of \(end) bytes.",
                         offset: start + 1)
        case CRPC_MP_RESERVED_BYTE:
            return .init(message: "Invalid MessagePack byte 0xc1 at offset \(start).", offset: start)
        case CRPC_MP_PAYLOAD_PAST_END:
            return .init(message: "MessagePack value at offset \(start) claims \(why.claimed) payload bytes but only \(why.remaining) remain.",
                         offset: start)
        case CRPC_MP_TOO_DEEP:
            return .init(message: "MessagePack input nests containers deeper than the limit of \(maxDepth).", offset: start)
        default: // CRPC_MP_TOO_MANY
            let what = why.is_map != 0 ? "map claims \(why.claimed / 2) pairs" : "array claims \(why.claimed) elements"
            return .init(message: "MessagePack \(what) at offset \(start) but only \(why.remaining) bytes remain.", offset: start)
        }
    }

    /// The length or count field a type byte announces.
    private static func field(_ byte: UInt8) -> String {
        switch byte {
        case 0xc4: "a bin8 length"
        case 0xc5: "a bin16 length"
        case 0xc6: "a bin32 length"
        case 0xc7: "an ext8 length"
        case 0xc8: "an ext16 length"
        case 0xc9: "an ext32 length"
        case 0xd9: "a str8 length"
        case 0xda: "a str16 length"
        case 0xdb: "a str32 length"
        case 0xdc: "an array16 count"
        case 0xdd: "an array32 count"
        case 0xde: "a map16 count"
        default: "a map32 count"
        }
    }
}
