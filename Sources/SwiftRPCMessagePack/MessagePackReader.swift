// MessagePackReader: owns a msgpack_zone and turns bytes into a msgpack_object tree, once.
//
// Lifecycle: `withTree` validates the bytes (MessagePackValidator: no memory bombs, bounded
// depth), has msgpack_unpack build the tree in the zone, runs the caller's closure on it, and
// clears the zone. The tree (and every str/bin in it, which point straight into the input, not
// into copies) is valid only inside that closure. The zone keeps its first chunk between
// uses, so unpacking a typical message allocates nothing.
//
// Depth: msgpack-c 4.0 is compiled with a fixed parse stack of 32 containers
// (MSGPACK_EMBED_STACK_SIZE) and fails deeper input with "out of memory", so limits above 32 are
// lowered to 32 here and reported as a depth error instead.
//
// Thread confinement: a reader belongs to one thread at a time; it is deliberately not Sendable.

internal import CMsgPack

final class MessagePackReader {
    /// The deepest nesting msgpack-c's unpacker accepts (its compiled-in stack size).
    static let msgpackDepthLimit = 32

    private let zone: UnsafeMutablePointer<msgpack_zone>
    private let root: UnsafeMutablePointer<msgpack_object>
    // `@exclusivity(unchecked)`: the reader is confined to one thread and no access overlaps.
    /// The decoder state reused by decodes through this reader.
    @exclusivity(unchecked) private var cachedState: MessagePackDecoderState?

    /// Creates a reader whose zone allocates `chunkSize` bytes at a time.
    init(chunkSize: Int = 4096) {
        zone = .allocate(capacity: 1)
        guard msgpack_zone_init(zone, chunkSize) else { fatalError("MessagePackReader: out of memory") }
        root = .allocate(capacity: 1)
        root.initialize(to: msgpack_object())
    }

    deinit {
        msgpack_zone_destroy(zone)
        zone.deallocate()
        root.deinitialize(count: 1)
        root.deallocate()
    }

    /// Validates `bytes` and unpacks them. The returned tree lives until the zone is next
    /// cleared, and borrows from `bytes`.
    ///
    /// - Parameter allowTrailingBytes: if false, bytes after the first value are an error.
    /// - Throws: `DecodingError.dataCorrupted` for anything the validator or msgpack-c rejects.
    private func unpack(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int, allowTrailingBytes: Bool = false
    ) throws(DecodingError) -> UnsafePointer<msgpack_object> {
        let depthLimit = min(maxDepth, Self.msgpackDepthLimit)
        let length: Int
        do {
            length = try MessagePackValidator.validate(bytes, maxDepth: depthLimit)
        } catch {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: [], debugDescription: error.message))
        }
        if !allowTrailingBytes && length != bytes.count {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [],
                debugDescription: "\(bytes.count - length) unexpected bytes after the MessagePack value."))
        }
        msgpack_zone_clear(zone)
        var offset = 0
        let status = msgpack_unpack(
            bytes.baseAddress!.assumingMemoryBound(to: CChar.self), length, &offset, zone, root)
        guard status == MSGPACK_UNPACK_SUCCESS else {
            // The validator accepts only what msgpack-c parses; reaching here means an allocation failed.
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [], debugDescription: "msgpack-c could not unpack the input (status \(status.rawValue))."))
        }
        return UnsafePointer(root)
    }

    /// True while `withTree` runs; a nested decode on the same reader would clear the tree in use.
    @exclusivity(unchecked) private(set) var isBusy = false

    /// Unpacks `bytes` and calls `body` with the tree and a ready decoder state; the zone is
    /// released afterwards. Re-entrant use (a `Decodable` that decodes through the same reader)
    /// is served by a temporary reader.
    func withTree<R>(
        _ bytes: UnsafeRawBufferPointer, maxDepth: Int, allowTrailingBytes: Bool = false,
        _ body: (UnsafePointer<msgpack_object>, MessagePackDecoderState) throws -> R
    ) throws -> R {
        if isBusy {
            return try MessagePackReader(chunkSize: 1024).withTree(
                bytes, maxDepth: maxDepth, allowTrailingBytes: allowTrailingBytes, body)
        }
        isBusy = true
        defer {
            isBusy = false
            msgpack_zone_clear(zone)
        }
        let tree = try unpack(bytes, maxDepth: maxDepth, allowTrailingBytes: allowTrailingBytes)
        let state: MessagePackDecoderState
        if let cachedState {
            state = cachedState
        } else {
            state = MessagePackDecoderState()
            cachedState = state
        }
        state.reset(tree)
        return try body(tree, state)
    }
}
