internal import CRPCCore

/// The core's MessagePack readers, for Swift code that reads encoded bytes without decoding.
enum CoreMessagePack {
    /// The byte range within `array` (one encoded MessagePack array) of its element `index`,
    /// or nil when there is none or the bytes are no array.
    static func arrayElement(_ index: Int, of array: UnsafeRawBufferPointer) -> Range<Int>? {
        guard let base = array.baseAddress?.assumingMemoryBound(to: UInt8.self), index >= 0 else { return nil }
        var element: UnsafePointer<UInt8>?
        var length = 0
        guard crpc_msgpack_array_elem(base, array.count, UInt32(clamping: index), &element, &length) == 0,
              let element else { return nil }
        let start = element - base
        return start..<(start + length)
    }
}
