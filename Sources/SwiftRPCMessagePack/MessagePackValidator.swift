// MessagePackValidator: a fast structural check run on untrusted bytes before msgpack-c sees them.
//
// Why: msgpack-c's unpacker allocates `count * sizeof(msgpack_object)` (24 bytes; 48 per map
// pair) as soon as it reads a container header, before any element is present. A 5-byte array32
// header claiming 2^32 elements would ask for ~100 GB. The validator walks the bytes once, keeps
// no state beyond a stack of element counts, allocates nothing on the heap for sane depths, and
// rejects:
//   - a container claiming more elements than there are bytes left (every element is >= 1 byte,
//     every map pair >= 2), so msgpack-c's allocations stay within 24x the input size;
//   - a str/bin/ext length, or any fixed-width field, that runs past the end;
//   - nesting deeper than the limit (each array or map, empty or not, is one level);
//   - the never-used byte 0xc1.
// On success it returns the offset just past the first complete value; the input is then
// guaranteed to unpack with msgpack-c without a parse error.

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
        guard let base = bytes.baseAddress, !bytes.isEmpty else {
            throw MessagePackValidationError(message: "Empty input: expected a MessagePack value.", offset: 0)
        }
        let maxDepth = max(maxDepth, 0)
        let result: Result<Int, MessagePackValidationError> = withUnsafeTemporaryAllocation(
            of: Int.self, capacity: maxDepth + 1
        ) { stack in
            do throws(MessagePackValidationError) {
                return .success(try walk(base, count: bytes.count, maxDepth: maxDepth, stack: stack))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// The walk itself. `stack[d]` holds how many elements were still owed at depth `d` when a
    /// container at depth `d + 1` was entered.
    private static func walk(
        _ base: UnsafeRawPointer, count end: Int, maxDepth: Int, stack: UnsafeMutableBufferPointer<Int>
    ) throws(MessagePackValidationError) -> Int {
        var pos = 0
        var depth = 0
        var owed = 1  // values still to read at the current depth; the root is one value

        @inline(__always)
        func truncated(_ what: String) -> MessagePackValidationError {
            MessagePackValidationError(message: "Truncated MessagePack input: \(what) runs past the end of \(end) bytes.", offset: pos)
        }

        /// Reads a big-endian unsigned field of `width` bytes at `pos`.
        @inline(__always)
        func field(_ width: Int, _ what: String) throws(MessagePackValidationError) -> Int {
            guard width <= end - pos else { throw truncated(what) }
            var value = 0
            for i in 0..<width { value = value << 8 | Int(base.load(fromByteOffset: pos + i, as: UInt8.self)) }
            pos += width
            return value
        }

        while true {
            if owed == 0 {
                if depth == 0 { return pos }
                depth -= 1
                owed = stack[depth]
                continue
            }
            owed -= 1
            guard pos < end else { throw truncated("a value") }
            let start = pos
            let byte = base.load(fromByteOffset: pos, as: UInt8.self)
            pos += 1
            var skip = 0  // payload bytes after the header
            var children = -1  // >= 0 for a container: values it holds (2 per map pair)
            var isMap = false
            switch byte {
            case 0x00...0x7f, 0xe0...0xff, 0xc0, 0xc2, 0xc3: break
            case 0x80...0x8f: children = Int(byte & 0x0f) * 2; isMap = true
            case 0x90...0x9f: children = Int(byte & 0x0f)
            case 0xa0...0xbf: skip = Int(byte & 0x1f)
            case 0xc1:
                throw MessagePackValidationError(message: "Invalid MessagePack byte 0xc1 at offset \(start).", offset: start)
            case 0xc4: skip = try field(1, "a bin8 length")
            case 0xc5: skip = try field(2, "a bin16 length")
            case 0xc6: skip = try field(4, "a bin32 length")
            case 0xc7: skip = try field(1, "an ext8 length") + 1
            case 0xc8: skip = try field(2, "an ext16 length") + 1
            case 0xc9: skip = try field(4, "an ext32 length") + 1
            case 0xca: skip = 4
            case 0xcb: skip = 8
            case 0xcc, 0xd0: skip = 1
            case 0xcd, 0xd1: skip = 2
            case 0xce, 0xd2: skip = 4
            case 0xcf, 0xd3: skip = 8
            case 0xd4: skip = 2
            case 0xd5: skip = 3
            case 0xd6: skip = 5
            case 0xd7: skip = 9
            case 0xd8: skip = 17
            case 0xd9: skip = try field(1, "a str8 length")
            case 0xda: skip = try field(2, "a str16 length")
            case 0xdb: skip = try field(4, "a str32 length")
            case 0xdc: children = try field(2, "an array16 count")
            case 0xdd: children = try field(4, "an array32 count")
            case 0xde: children = try field(2, "a map16 count") * 2; isMap = true
            case 0xdf: children = try field(4, "a map32 count") * 2; isMap = true
            default: break  // unreachable: the cases above cover every byte
            }
            if skip > 0 {
                guard skip <= end - pos else {
                    throw MessagePackValidationError(
                        message: "MessagePack value at offset \(start) claims \(skip) payload bytes but only \(end - pos) remain.",
                        offset: start)
                }
                pos += skip
            } else if children >= 0 {
                guard depth < maxDepth else {
                    throw MessagePackValidationError(
                        message: "MessagePack input nests containers deeper than the limit of \(maxDepth).", offset: start)
                }
                guard children <= end - pos else {
                    let what = isMap ? "map claims \(children / 2) pairs" : "array claims \(children) elements"
                    throw MessagePackValidationError(
                        message: "MessagePack \(what) at offset \(start) but only \(end - pos) bytes remain.", offset: start)
                }
                if children > 0 {
                    stack[depth] = owed
                    depth += 1
                    owed = children
                }
            }
        }
    }
}
