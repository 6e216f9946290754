// MessagePackWriter: a reusable, growable byte buffer that msgpack-c's packer writes into.
//
// Every MessagePack byte SwiftRPC produces goes through `msgpack_pack_*`. The packer's write
// callback appends to a malloc'd buffer owned by this class, so encoding allocates nothing once the
// buffer has grown to the largest message seen; `reset()` keeps the capacity. The RPC layer keeps
// one writer per event-loop thread, builds a whole envelope in it (`packArrayHeader`, `packUInt`,
// ... then `MessagePackEncoder.encode(_:into:)` for the payload) and hands `withUnsafeBytes` to
// the send path.
//
// Container headers: `Codable` does not say how many elements a container will hold until it is
// done, so the encoder reserves one byte (`reserveHeader`) and fills it in afterwards
// (`patchHeader`). A fixarray/fixmap (up to 15 elements, the common case) fits in place; a longer
// header shifts the container's bytes right by 2 or 4.
//
// Thread confinement: a writer belongs to one thread at a time; it is deliberately not Sendable.

internal import CMsgPack
#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#endif

/// Where msgpack-c's write callback appends. Lives in malloc'd memory so the C side can hold a
/// stable pointer to it for the writer's whole life.
struct MessagePackSink {
    var base: UnsafeMutableRawPointer
    var count: Int
    var capacity: Int

    static func allocate(capacity: Int) -> UnsafeMutablePointer<MessagePackSink> {
        let capacity = max(capacity, 16)
        guard let base = malloc(capacity) else { fatalError("MessagePackWriter: out of memory") }
        let sink = UnsafeMutablePointer<MessagePackSink>.allocate(capacity: 1)
        sink.initialize(to: MessagePackSink(base: base, count: 0, capacity: capacity))
        return sink
    }

    static func deallocate(_ sink: UnsafeMutablePointer<MessagePackSink>) {
        free(sink.pointee.base)
        sink.deinitialize(count: 1)
        sink.deallocate()
    }

    /// Makes room for `needed` bytes in total, growing geometrically so appends stay amortized O(1).
    mutating func reserve(_ needed: Int) {
        guard needed > capacity else { return }
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        guard let grown = realloc(base, newCapacity) else { fatalError("MessagePackWriter: out of memory") }
        base = grown
        capacity = newCapacity
    }
}

/// The packer's write callback: append `len` bytes to the sink in `data`. Never fails (growth
/// failure is fatal, as for Swift arrays), so it always returns 0.
private func messagePackSinkWrite(
    _ data: UnsafeMutableRawPointer?, _ buf: UnsafePointer<CChar>?, _ len: Int
) -> Int32 {
    let sink = data.unsafelyUnwrapped.assumingMemoryBound(to: MessagePackSink.self)
    let end = sink.pointee.count + len
    if end > sink.pointee.capacity { sink.pointee.reserve(end) }
    if len > 0 {
        (sink.pointee.base + sink.pointee.count).copyMemory(from: buf.unsafelyUnwrapped, byteCount: len)
    }
    sink.pointee.count = end
    return 0
}

/// A growable MessagePack output buffer written through msgpack-c's packer. Reusable: `reset()`
/// empties it and keeps its capacity. Confined to one thread at a time.
package final class MessagePackWriter {
    /// The bytes written so far.
    private let sink: UnsafeMutablePointer<MessagePackSink>
    /// Writes to `sink`.
    private let packer: UnsafeMutablePointer<msgpack_packer>
    /// Writes to `scratch`: container headers are packed there, then copied into place.
    private let scratch: UnsafeMutablePointer<MessagePackSink>
    private let scratchPacker: UnsafeMutablePointer<msgpack_packer>
    /// The encoder state reused by every `MessagePackEncoder.encode(_:into:)` on this writer.
    /// `@exclusivity(unchecked)`: the writer is confined to one thread and no access overlaps.
    @exclusivity(unchecked) private var cachedEncoder: MessagePackEncoderState?

    /// Creates an empty writer; `initialCapacity` bytes are allocated up front.
    package init(initialCapacity: Int = 256) {
        sink = MessagePackSink.allocate(capacity: initialCapacity)
        scratch = MessagePackSink.allocate(capacity: 16)
        packer = .allocate(capacity: 1)
        packer.initialize(to: msgpack_packer(data: UnsafeMutableRawPointer(sink), callback: messagePackSinkWrite))
        scratchPacker = .allocate(capacity: 1)
        scratchPacker.initialize(
            to: msgpack_packer(data: UnsafeMutableRawPointer(scratch), callback: messagePackSinkWrite))
    }

    deinit {
        packer.deinitialize(count: 1)
        packer.deallocate()
        scratchPacker.deinitialize(count: 1)
        scratchPacker.deallocate()
        MessagePackSink.deallocate(sink)
        MessagePackSink.deallocate(scratch)
    }

    /// Number of bytes written.
    package var count: Int { sink.pointee.count }

    /// Empties the buffer, keeping its capacity.
    package func reset() { sink.pointee.count = 0 }

    /// Drops everything written after `count` bytes (used to undo a failed encode).
    func truncate(to count: Int) {
        precondition(count >= 0 && count <= sink.pointee.count, "MessagePackWriter.truncate out of range")
        sink.pointee.count = count
    }

    /// Calls `body` with the bytes written so far. The pointer is valid only inside `body` and
    /// only until the writer is next written to.
    package func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: sink.pointee.base, count: sink.pointee.count))
    }

    /// A copy of the bytes written so far.
    var bytes: [UInt8] {
        let n = sink.pointee.count
        let base = sink.pointee.base
        return [UInt8](unsafeUninitializedCapacity: n) { buffer, initialized in
            if n > 0 { UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: base, byteCount: n) }
            initialized = n
        }
    }

    /// The encoder state bound to this writer, created on first use and then reused.
    func encoderState() -> MessagePackEncoderState {
        if let state = cachedEncoder { return state }
        let state = MessagePackEncoderState(writer: self)
        cachedEncoder = state
        return state
    }

    /// Writes `value` when it is one of the types MessagePack has a native form for (see
    /// `MessagePackScalar`); false, writing nothing, for any other type.
    func packScalar<T: Encodable>(_ value: T) -> Bool {
        let type = T.self
        if type == String.self {
            packString(messagePackIdentityCast(value, to: String.self))
        } else if type == Int.self {
            packInt(Int64(messagePackIdentityCast(value, to: Int.self)))
        } else if type == Double.self {
            packDouble(messagePackIdentityCast(value, to: Double.self))
        } else if type == Bool.self {
            packBool(messagePackIdentityCast(value, to: Bool.self))
        } else if type == Data.self {
            messagePackIdentityCast(value, to: Data.self).withUnsafeBytes { packBinary($0) }
        } else if ObjectIdentifier(type) == MessagePackTypeID.bytes {
            messagePackIdentityCast(value, to: [UInt8].self).withUnsafeBytes { packBinary($0) }
        } else if type == Int64.self {
            packInt(messagePackIdentityCast(value, to: Int64.self))
        } else if type == UInt64.self {
            packUInt(messagePackIdentityCast(value, to: UInt64.self))
        } else if type == Int32.self {
            packInt(Int64(messagePackIdentityCast(value, to: Int32.self)))
        } else if type == UInt32.self {
            packUInt(UInt64(messagePackIdentityCast(value, to: UInt32.self)))
        } else if type == UInt.self {
            packUInt(UInt64(messagePackIdentityCast(value, to: UInt.self)))
        } else if type == Float.self {
            packFloat(messagePackIdentityCast(value, to: Float.self))
        } else if type == Int16.self {
            packInt(Int64(messagePackIdentityCast(value, to: Int16.self)))
        } else if type == UInt16.self {
            packUInt(UInt64(messagePackIdentityCast(value, to: UInt16.self)))
        } else if type == Int8.self {
            packInt(Int64(messagePackIdentityCast(value, to: Int8.self)))
        } else if type == UInt8.self {
            packUInt(UInt64(messagePackIdentityCast(value, to: UInt8.self)))
        } else {
            return false
        }
        return true
    }

    // MARK: Scalars. Integers take the most compact form, as Python's msgpack does.

    func packNil() { _ = msgpack_pack_nil(packer) }

    func packBool(_ value: Bool) { _ = value ? msgpack_pack_true(packer) : msgpack_pack_false(packer) }

    func packInt(_ value: Int64) { _ = msgpack_pack_int64(packer, value) }

    func packUInt(_ value: UInt64) { _ = msgpack_pack_uint64(packer, value) }

    func packFloat(_ value: Float) { _ = msgpack_pack_float(packer, value) }

    func packDouble(_ value: Double) { _ = msgpack_pack_double(packer, value) }

    /// Packs `value` as a MessagePack str (UTF-8).
    func packString(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in _ = msgpack_pack_str_with_body(packer, utf8.baseAddress, utf8.count) }
    }

    /// Packs `bytes` as a MessagePack bin.
    package func packBinary(_ bytes: UnsafeRawBufferPointer) {
        _ = msgpack_pack_bin_with_body(packer, bytes.baseAddress, bytes.count)
    }

    /// Packs an array header; `count` values must follow.
    package func packArrayHeader(_ count: Int) { _ = msgpack_pack_array(packer, count) }

    /// Packs a map header; `count` key/value pairs must follow.
    func packMapHeader(_ count: Int) { _ = msgpack_pack_map(packer, count) }

    /// Appends already-encoded MessagePack bytes verbatim.
    package func appendRaw(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        _ = messagePackSinkWrite(UnsafeMutableRawPointer(sink), base.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    // MARK: Deferred container headers

    /// Reserves one byte for a container header whose count is not known yet; returns its offset.
    func reserveHeader() -> Int {
        let offset = sink.pointee.count
        sink.pointee.reserve(offset + 1)
        sink.pointee.count = offset + 1
        return offset
    }

    /// Writes the header of a container with `count` elements (pairs, for a map) at `offset`, a
    /// byte reserved by `reserveHeader`. Headers longer than one byte shift what follows.
    func patchHeader(at offset: Int, count: Int, isMap: Bool) {
        scratch.pointee.count = 0
        _ = isMap ? msgpack_pack_map(scratchPacker, count) : msgpack_pack_array(scratchPacker, count)
        let headerLength = scratch.pointee.count
        let base = sink.pointee.base
        if headerLength == 1 {
            base.storeBytes(of: scratch.pointee.base.load(as: UInt8.self), toByteOffset: offset, as: UInt8.self)
            return
        }
        let extra = headerLength - 1
        let oldCount = sink.pointee.count
        sink.pointee.reserve(oldCount + extra)
        let moved = sink.pointee.base
        memmove(moved + offset + headerLength, moved + offset + 1, oldCount - offset - 1)
        (moved + offset).copyMemory(from: scratch.pointee.base, byteCount: headerLength)
        sink.pointee.count = oldCount + extra
    }

    /// Inserts an empty map (0x80) at `offset`, shifting what follows: the value of an encoder that
    /// was handed out but never written to.
    func insertEmptyMap(at offset: Int) {
        let oldCount = sink.pointee.count
        sink.pointee.reserve(oldCount + 1)
        let base = sink.pointee.base
        if oldCount > offset { memmove(base + offset + 1, base + offset, oldCount - offset) }
        base.storeBytes(of: 0x80, toByteOffset: offset, as: UInt8.self)
        sink.pointee.count = oldCount + 1
    }
}
