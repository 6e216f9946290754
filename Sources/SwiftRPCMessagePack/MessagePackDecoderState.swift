// MessagePackDecoderState: the `Decoder` behind MessagePackDecoder. It walks the msgpack_object
// tree msgpack-c built (see MessagePackReader); nothing is parsed twice and nothing is copied
// except into the final Swift values.
//
// One state serves a whole decode: `current` points at the node whose `init(from:)` is running and
// is saved/restored around each nested value, so decoding a struct field allocates no Decoder.
// Only `superDecoder()` makes a second state. Containers are small structs holding a node pointer;
// like the tree itself they are valid only during the decode call that produced them.
//
// Map lookups: a keyed container scans its map's pairs starting where the previous lookup at the
// same nesting level matched. Decoding order almost always equals encoding order (declaration
// order, or allKeys order for dictionaries), so each lookup is usually one or two comparisons.

internal import CMsgPack

final class MessagePackDecoderState: Decoder {
    // `@exclusivity(unchecked)`: the state is confined to one thread and no access to these
    // properties spans a call that could reach them again, so the runtime checks buy nothing.
    /// The node whose `init(from:)` is running.
    @exclusivity(unchecked) private(set) var current: MessagePackObject
    /// Coding path of `current`.
    @exclusivity(unchecked) private(set) var path: [any CodingKey] = []
    /// Per nesting level: the map last looked up there and the index of its last match.
    @exclusivity(unchecked) private var hints: [(map: MessagePackObject?, index: Int)] = []

    init() {
        current = messagePackNilObject
        path.reserveCapacity(16)
    }

    /// A state for `superDecoder()`: decodes `object`, whose coding path is `path`.
    init(object: MessagePackObject, path: [any CodingKey]) {
        current = object
        self.path = path
    }

    /// Points the state at a new tree.
    func reset(_ root: MessagePackObject) {
        current = root
        if !path.isEmpty { path.removeAll(keepingCapacity: true) }
    }

    var codingPath: [any CodingKey] { path }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    // MARK: Values

    /// Decodes `object`, an element of a container, as `T`. `depth`, `extra` and `key` give its
    /// coding path (see messagePackCodingPath).
    func decodeValue<T: Decodable, K: CodingKey>(
        _ type: T.Type, at object: MessagePackObject, depth: Int, extra: [any CodingKey], key: K
    ) throws -> T {
        if let kind = MessagePackScalar.direct(T.self, for: object) {
            return try Self.scalar(T.self, object, messagePackCodingPath(path, depth: depth, extra: extra, appending: key)) {
                o throws(MessagePackUnboxFailure) in try MessagePackUnbox.scalar(o, kind, as: T.self)
            }
        }
        let pushed = extra.count + 1
        path.append(contentsOf: extra)
        path.append(key)
        defer { path.removeLast(pushed) }
        return try decodeComposite(type, at: object)
    }

    /// Decodes `object`, the value of a single-value container (or the root), as `T`.
    func decodeValue<T: Decodable>(_ type: T.Type, at object: MessagePackObject, depth: Int) throws -> T {
        guard let kind = MessagePackScalar.direct(T.self, for: object) else { return try decodeComposite(type, at: object) }
        return try Self.scalar(T.self, object, Array(path.prefix(depth))) {
            o throws(MessagePackUnboxFailure) in try MessagePackUnbox.scalar(o, kind, as: T.self)
        }
    }

    private func decodeComposite<T: Decodable>(_ type: T.Type, at object: MessagePackObject) throws -> T {
        let saved = current
        current = object
        defer { current = saved }
        return try T(from: self)
    }

    /// Decodes a scalar with `read`, mapping a failure to a DecodingError at `codingPath`.
    @inline(__always)
    static func scalar<T>(
        _ type: T.Type, _ object: MessagePackObject, _ codingPath: @autoclosure () -> [any CodingKey],
        _ read: (MessagePackObject) throws(MessagePackUnboxFailure) -> T
    ) throws -> T {
        do {
            return try read(object)
        } catch {
            throw error.decodingError(T.self, codingPath())
        }
    }

    /// The error for a container request on a node of the wrong type.
    static func containerMismatch(_ type: Any.Type, _ object: MessagePackObject, _ codingPath: [any CodingKey]) -> DecodingError {
        if object.pointee.type == MSGPACK_OBJECT_NIL {
            return .valueNotFound(type, .init(
                codingPath: codingPath, debugDescription: "Expected a MessagePack \(type == [Any].self ? "array" : "map") but found nil instead."))
        }
        return .typeMismatch(type, .init(
            codingPath: codingPath,
            debugDescription: "Expected a MessagePack \(type == [Any].self ? "array" : "map") but found \(MessagePackUnbox.typeName(object)) instead."))
    }

    // MARK: Map lookup hints

    @inline(__always)
    func hint(level: Int, map: MessagePackObject) -> Int {
        guard level < hints.count, hints[level].map == map else { return 0 }
        return hints[level].index
    }

    @inline(__always)
    func setHint(level: Int, map: MessagePackObject, index: Int) {
        while hints.count <= level { hints.append((nil, 0)) }
        hints[level] = (map, index)
    }

    // MARK: Decoder

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard current.pointee.type == MSGPACK_OBJECT_MAP else {
            throw Self.containerMismatch([String: Any].self, current, path)
        }
        return KeyedDecodingContainer(
            MessagePackKeyedDecodingContainer<Key>(state: self, map: current, depth: path.count, extra: []))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard current.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw Self.containerMismatch([Any].self, current, path)
        }
        return MessagePackUnkeyedDecodingContainer(state: self, array: current, depth: path.count, extra: [])
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        MessagePackSingleValueDecodingContainer(state: self, object: current, depth: path.count)
    }
}
