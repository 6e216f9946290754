// The decoding containers: thin views of a map, array or single node of the unpacked tree.
//
// Map keys: a str key matches a coding key's stringValue byte for byte; an int key matches its
// intValue (so `[Int: V]` round-trips through int keys, and numeric str keys still decode into
// `[Int: V]`). `allKeys` lists the keys in wire order.

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#endif
internal import CMsgPack

struct MessagePackKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let state: MessagePackDecoderState
    let map: MessagePackObject
    let depth: Int
    let extra: [any CodingKey]

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }

    private func path(_ key: some CodingKey) -> [any CodingKey] {
        messagePackCodingPath(state.path, depth: depth, extra: extra, appending: key)
    }

    private static var valueOffset: Int { MemoryLayout<msgpack_object_kv>.offset(of: \msgpack_object_kv.val)! }

    var allKeys: [Key] {
        let pairs = map.pointee.via.map
        var keys: [Key] = []
        keys.reserveCapacity(Int(pairs.size))
        for i in 0..<Int(pairs.size) {
            let key = pairs.ptr[i].key
            switch key.type {
            case MSGPACK_OBJECT_STR:
                let bytes = UnsafeBufferPointer(
                    start: UnsafeRawPointer(key.via.str.ptr)?.assumingMemoryBound(to: UInt8.self), count: Int(key.via.str.size))
                if let name = String(validating: bytes, as: UTF8.self), let codingKey = Key(stringValue: name) {
                    keys.append(codingKey)
                }
            case MSGPACK_OBJECT_POSITIVE_INTEGER:
                if let value = Int(exactly: key.via.u64), let codingKey = Key(intValue: value) { keys.append(codingKey) }
            case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                if let value = Int(exactly: key.via.i64), let codingKey = Key(intValue: value) { keys.append(codingKey) }
            default:
                break
            }
        }
        return keys
    }

    /// The value stored under `key`, or nil.
    private func find(_ key: some CodingKey) -> MessagePackObject? {
        let pairs = map.pointee.via.map
        let count = Int(pairs.size)
        guard count > 0, let kvs = pairs.ptr else { return nil }
        let level = depth + extra.count
        var start = state.hint(level: level, map: map)
        if start >= count { start = 0 }
        let intKey = key.intValue
        var name = key.stringValue
        let found: Int? = name.withUTF8 { utf8 in
            var i = start
            repeat {
                if Self.matches(kvs[i].key, utf8, intKey) { return i }
                i += 1
                if i == count { i = 0 }
            } while i != start
            return nil
        }
        guard let found else { return nil }
        state.setHint(level: level, map: map, index: found)
        return UnsafeRawPointer(kvs + found).advanced(by: Self.valueOffset).assumingMemoryBound(to: msgpack_object.self)
    }

    @inline(__always)
    private static func matches(_ key: msgpack_object, _ utf8: UnsafeBufferPointer<UInt8>, _ intKey: Int?) -> Bool {
        switch key.type {
        case MSGPACK_OBJECT_STR:
            let size = Int(key.via.str.size)
            return size == utf8.count && (size == 0 || memcmp(key.via.str.ptr, utf8.baseAddress!, size) == 0)
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            guard let intKey, intKey >= 0 else { return false }
            return UInt64(intKey) == key.via.u64
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            return intKey == Int(exactly: key.via.i64)
        default:
            return false
        }
    }

    private func require(_ key: Key) throws -> MessagePackObject {
        guard let value = find(key) else {
            throw DecodingError.keyNotFound(key, .init(
                codingPath: codingPath, debugDescription: "No value associated with key \(key) (\"\(key.stringValue)\")."))
        }
        return value
    }

    func contains(_ key: Key) -> Bool { find(key) != nil }

    func decodeNil(forKey key: Key) throws -> Bool { try require(key).pointee.type == MSGPACK_OBJECT_NIL }

    @inline(__always)
    private func scalar<T>(_ type: T.Type, _ key: Key, _ read: (MessagePackObject) throws(MessagePackUnboxFailure) -> T) throws -> T {
        try MessagePackDecoderState.scalar(type, try require(key), path(key), read)
    }

    @inline(__always)
    private func scalarIfPresent<T>(
        _ type: T.Type, _ key: Key, _ read: (MessagePackObject) throws(MessagePackUnboxFailure) -> T
    ) throws -> T? {
        guard let object = find(key), object.pointee.type != MSGPACK_OBJECT_NIL else { return nil }
        return try MessagePackDecoderState.scalar(type, object, path(key), read)
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try scalar(type, key, MessagePackUnbox.bool) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try scalar(type, key, MessagePackUnbox.string) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try scalar(type, key, MessagePackUnbox.double) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try scalar(type, key, MessagePackUnbox.float) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try scalar(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try state.decodeValue(type, at: try require(key), depth: depth, extra: extra, key: key)
    }

    // One lookup instead of the default implementations' three (contains, decodeNil, decode).
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try scalarIfPresent(type, key, MessagePackUnbox.bool) }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try scalarIfPresent(type, key, MessagePackUnbox.string) }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try scalarIfPresent(type, key, MessagePackUnbox.double) }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? { try scalarIfPresent(type, key, MessagePackUnbox.float) }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? { try scalarIfPresent(type, key) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let object = find(key), object.pointee.type != MSGPACK_OBJECT_NIL else { return nil }
        return try state.decodeValue(type, at: object, depth: depth, extra: extra, key: key)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let object = try require(key)
        guard object.pointee.type == MSGPACK_OBJECT_MAP else {
            throw MessagePackDecoderState.containerMismatch([String: Any].self, object, path(key))
        }
        return KeyedDecodingContainer(
            MessagePackKeyedDecodingContainer<NestedKey>(state: state, map: object, depth: depth, extra: extra + [key]))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let object = try require(key)
        guard object.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw MessagePackDecoderState.containerMismatch([Any].self, object, path(key))
        }
        return MessagePackUnkeyedDecodingContainer(state: state, array: object, depth: depth, extra: extra + [key])
    }

    /// A missing key gives a decoder of nil, as JSONDecoder does.
    func superDecoder() throws -> any Decoder {
        MessagePackDecoderState(object: find(MessagePackKey.superKey) ?? messagePackNilObject, path: path(MessagePackKey.superKey))
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        MessagePackDecoderState(object: find(key) ?? messagePackNilObject, path: path(key))
    }
}

struct MessagePackUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let state: MessagePackDecoderState
    let elements: UnsafeMutablePointer<msgpack_object>?
    let total: Int
    let depth: Int
    let extra: [any CodingKey]
    private(set) var currentIndex = 0

    init(state: MessagePackDecoderState, array: MessagePackObject, depth: Int, extra: [any CodingKey]) {
        self.state = state
        self.elements = array.pointee.via.array.ptr
        self.total = Int(array.pointee.via.array.size)
        self.depth = depth
        self.extra = extra
    }

    var codingPath: [any CodingKey] { messagePackCodingPath(state.path, depth: depth, extra: extra) }
    var count: Int? { total }
    var isAtEnd: Bool { currentIndex >= total }

    private func path(_ index: Int) -> [any CodingKey] {
        messagePackCodingPath(state.path, depth: depth, extra: extra, appending: MessagePackKey(index: index))
    }

    /// The next element, or a valueNotFound error if there is none.
    @inline(__always)
    private func next(_ type: Any.Type) throws -> MessagePackObject {
        guard currentIndex < total, let elements else {
            throw DecodingError.valueNotFound(type, .init(codingPath: path(currentIndex), debugDescription: "Unkeyed container is at end."))
        }
        return UnsafePointer(elements + currentIndex)
    }

    @inline(__always)
    private mutating func scalar<T>(_ type: T.Type, _ read: (MessagePackObject) throws(MessagePackUnboxFailure) -> T) throws -> T {
        let value = try MessagePackDecoderState.scalar(type, try next(type), path(currentIndex), read)
        currentIndex += 1
        return value
    }

    mutating func decodeNil() throws -> Bool {
        guard try next(Any?.self).pointee.type == MSGPACK_OBJECT_NIL else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try scalar(type, MessagePackUnbox.bool) }
    mutating func decode(_ type: String.Type) throws -> String { try scalar(type, MessagePackUnbox.string) }
    mutating func decode(_ type: Double.Type) throws -> Double { try scalar(type, MessagePackUnbox.double) }
    mutating func decode(_ type: Float.Type) throws -> Float { try scalar(type, MessagePackUnbox.float) }
    mutating func decode(_ type: Int.Type) throws -> Int { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let value = try state.decodeValue(
            type, at: try next(type), depth: depth, extra: extra, key: MessagePackKey(index: currentIndex))
        currentIndex += 1
        return value
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let object = try next([String: Any].self)
        guard object.pointee.type == MSGPACK_OBJECT_MAP else {
            throw MessagePackDecoderState.containerMismatch([String: Any].self, object, path(currentIndex))
        }
        let key = MessagePackKey(index: currentIndex)
        currentIndex += 1
        return KeyedDecodingContainer(
            MessagePackKeyedDecodingContainer<NestedKey>(state: state, map: object, depth: depth, extra: extra + [key]))
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let object = try next([Any].self)
        guard object.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw MessagePackDecoderState.containerMismatch([Any].self, object, path(currentIndex))
        }
        let key = MessagePackKey(index: currentIndex)
        currentIndex += 1
        return MessagePackUnkeyedDecodingContainer(state: state, array: object, depth: depth, extra: extra + [key])
    }

    mutating func superDecoder() throws -> any Decoder {
        let object = try next((any Decoder).self)
        let decoder = MessagePackDecoderState(object: object, path: path(currentIndex))
        currentIndex += 1
        return decoder
    }
}

struct MessagePackSingleValueDecodingContainer: SingleValueDecodingContainer {
    let state: MessagePackDecoderState
    let object: MessagePackObject
    let depth: Int

    var codingPath: [any CodingKey] { Array(state.path.prefix(depth)) }

    @inline(__always)
    private func scalar<T>(_ type: T.Type, _ read: (MessagePackObject) throws(MessagePackUnboxFailure) -> T) throws -> T {
        try MessagePackDecoderState.scalar(type, object, codingPath, read)
    }

    func decodeNil() -> Bool { object.pointee.type == MSGPACK_OBJECT_NIL }

    func decode(_ type: Bool.Type) throws -> Bool { try scalar(type, MessagePackUnbox.bool) }
    func decode(_ type: String.Type) throws -> String { try scalar(type, MessagePackUnbox.string) }
    func decode(_ type: Double.Type) throws -> Double { try scalar(type, MessagePackUnbox.double) }
    func decode(_ type: Float.Type) throws -> Float { try scalar(type, MessagePackUnbox.float) }
    func decode(_ type: Int.Type) throws -> Int { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int8.Type) throws -> Int8 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int16.Type) throws -> Int16 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int32.Type) throws -> Int32 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: Int64.Type) throws -> Int64 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt.Type) throws -> UInt { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try scalar(type) { o throws(MessagePackUnboxFailure) in try MessagePackUnbox.integer(o, type) } }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try state.decodeValue(type, at: object, depth: depth)
    }
}
