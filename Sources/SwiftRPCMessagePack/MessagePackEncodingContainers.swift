// The encoding containers and the super encoder. Each is a thin handle (state, frame, path) on
// MessagePackEncoderState; every write goes: beginElement (close finished siblings, count the
// element) -> key (a str of the key's stringValue; an int for `[Int: V]`) -> value.
//
// Keyed containers follow the standard library's coders: `encodeIfPresent` of nil writes nothing,
// so an optional struct field that is nil is absent from the map (decoding it gives nil again).

struct MessagePackKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let state: MessagePackEncoderState
    let ref: MessagePackFrameRef
    let depth: Int
    let extra: [any CodingKey]

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }

    private func path(_ key: some CodingKey) -> [any CodingKey] {
        messagePackCodingPath(state.path, depth: depth, extra: extra, appending: key)
    }

    @inline(__always)
    private func begin(_ key: Key) throws {
        try state.beginElement(ref, path(key))
        writeKey(key)
    }

    /// Keys are strs, except the int keys of a `[Int: V]` (see MessagePackIntKeyedMap).
    @inline(__always)
    private func writeKey(_ key: Key) {
        if let int = key.intValue, state.writesIntKeys(ref) {
            state.writer.packInt(Int64(int))
        } else {
            state.writer.packString(key.stringValue)
        }
    }

    mutating func encodeNil(forKey key: Key) throws { try begin(key); state.writer.packNil() }
    mutating func encode(_ value: Bool, forKey key: Key) throws { try begin(key); state.writer.packBool(value) }
    mutating func encode(_ value: String, forKey key: Key) throws { try begin(key); state.writer.packString(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws { try begin(key); state.writer.packDouble(value) }
    mutating func encode(_ value: Float, forKey key: Key) throws { try begin(key); state.writer.packFloat(value) }
    mutating func encode(_ value: Int, forKey key: Key) throws { try begin(key); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { try begin(key); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { try begin(key); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { try begin(key); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { try begin(key); state.writer.packInt(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { try begin(key); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { try begin(key); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { try begin(key); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { try begin(key); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { try begin(key); state.writer.packUInt(value) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try begin(key)
        try state.encodeElement(value, extra: extra, key: key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        var nested = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(key)) {
            writeKey(key)
            nested = state.pushContainer(.map)
        }
        return KeyedEncodingContainer(
            MessagePackKeyedEncodingContainer<NestedKey>(state: state, ref: nested, depth: depth, extra: extra + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        var nested = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(key)) {
            writeKey(key)
            nested = state.pushContainer(.array)
        }
        return MessagePackUnkeyedEncodingContainer(state: state, ref: nested, depth: depth, extra: extra + [key])
    }

    mutating func superEncoder() -> any Encoder {
        let key = MessagePackKey.superKey
        var slot = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(key)) {
            state.writer.packString(key.stringValue)
            slot = state.pushSlot()
        }
        return MessagePackSuperEncoder(state: state, slot: slot, depth: depth, extra: extra + [key])
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        var slot = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(key)) {
            writeKey(key)
            slot = state.pushSlot()
        }
        return MessagePackSuperEncoder(state: state, slot: slot, depth: depth, extra: extra + [key])
    }
}

struct MessagePackUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let state: MessagePackEncoderState
    let ref: MessagePackFrameRef
    let depth: Int
    let extra: [any CodingKey]
    private(set) var count = 0

    init(state: MessagePackEncoderState, ref: MessagePackFrameRef, depth: Int, extra: [any CodingKey]) {
        self.state = state
        self.ref = ref
        self.depth = depth
        self.extra = extra
    }

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }

    private func path(_ index: Int) -> [any CodingKey] {
        messagePackCodingPath(state.path, depth: depth, extra: extra, appending: MessagePackKey(index: index))
    }

    /// Readies the next element; returns its index.
    @inline(__always)
    private mutating func begin() throws -> Int {
        try state.beginElement(ref, path(count))
        count += 1
        return count - 1
    }

    mutating func encodeNil() throws { _ = try begin(); state.writer.packNil() }
    mutating func encode(_ value: Bool) throws { _ = try begin(); state.writer.packBool(value) }
    mutating func encode(_ value: String) throws { _ = try begin(); state.writer.packString(value) }
    mutating func encode(_ value: Double) throws { _ = try begin(); state.writer.packDouble(value) }
    mutating func encode(_ value: Float) throws { _ = try begin(); state.writer.packFloat(value) }
    mutating func encode(_ value: Int) throws { _ = try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int8) throws { _ = try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int16) throws { _ = try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int32) throws { _ = try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int64) throws { _ = try begin(); state.writer.packInt(value) }
    mutating func encode(_ value: UInt) throws { _ = try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { _ = try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { _ = try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { _ = try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { _ = try begin(); state.writer.packUInt(value) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        let index = try begin()
        try state.encodeElement(value, extra: extra, key: MessagePackKey(index: index))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let key = MessagePackKey(index: count)
        var nested = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(count)) {
            count += 1
            nested = state.pushContainer(.map)
        }
        return KeyedEncodingContainer(
            MessagePackKeyedEncodingContainer<NestedKey>(state: state, ref: nested, depth: depth, extra: extra + [key]))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let key = MessagePackKey(index: count)
        var nested = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(count)) {
            count += 1
            nested = state.pushContainer(.array)
        }
        return MessagePackUnkeyedEncodingContainer(state: state, ref: nested, depth: depth, extra: extra + [key])
    }

    mutating func superEncoder() -> any Encoder {
        let key = MessagePackKey(index: count)
        var slot = MessagePackFrameRef.dead
        if state.tryBeginElement(ref, path(count)) {
            count += 1
            slot = state.pushSlot()
        }
        return MessagePackSuperEncoder(state: state, slot: slot, depth: depth, extra: extra + [key])
    }
}

struct MessagePackSingleValueEncodingContainer: SingleValueEncodingContainer {
    let state: MessagePackEncoderState
    let slot: MessagePackFrameRef
    let depth: Int
    let extra: [any CodingKey]

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }

    @inline(__always)
    private func begin() throws { try state.fillSlot(slot, codingPath) }

    mutating func encodeNil() throws { try begin(); state.writer.packNil() }
    mutating func encode(_ value: Bool) throws { try begin(); state.writer.packBool(value) }
    mutating func encode(_ value: String) throws { try begin(); state.writer.packString(value) }
    mutating func encode(_ value: Double) throws { try begin(); state.writer.packDouble(value) }
    mutating func encode(_ value: Float) throws { try begin(); state.writer.packFloat(value) }
    mutating func encode(_ value: Int) throws { try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int8) throws { try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int16) throws { try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int32) throws { try begin(); state.writer.packInt(Int64(value)) }
    mutating func encode(_ value: Int64) throws { try begin(); state.writer.packInt(value) }
    mutating func encode(_ value: UInt) throws { try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { try begin(); state.writer.packUInt(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { try begin(); state.writer.packUInt(value) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try begin()
        try state.encodeSlotValue(value, extra: extra)
    }
}

/// The encoder `superEncoder()` returns: writes one value into the slot reserved for it in the
/// parent container. If it is never used, the slot becomes an empty map.
final class MessagePackSuperEncoder: Encoder {
    let state: MessagePackEncoderState
    let slot: MessagePackFrameRef
    let depth: Int
    let extra: [any CodingKey]

    init(state: MessagePackEncoderState, slot: MessagePackFrameRef, depth: Int, extra: [any CodingKey]) {
        self.state = state
        self.slot = slot
        self.depth = depth
        self.extra = extra
    }

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let ref = state.openContainer(in: slot, .map, self.codingPath)
        return KeyedEncodingContainer(MessagePackKeyedEncodingContainer<Key>(state: state, ref: ref, depth: depth, extra: extra))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let ref = state.openContainer(in: slot, .array, self.codingPath)
        return MessagePackUnkeyedEncodingContainer(state: state, ref: ref, depth: depth, extra: extra)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        MessagePackSingleValueEncodingContainer(state: state, slot: slot, depth: depth, extra: extra)
    }
}
