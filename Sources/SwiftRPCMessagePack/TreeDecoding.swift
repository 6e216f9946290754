internal import CMsgPack

/// A MessagePack value msgpack-c has already unpacked: the root of its object tree, decoded
/// where it lies. The RPC core makes one from a frame it unpacked (`crpc_message_value`),
/// so no bytes are parsed twice; the tree lives as long as the frame does.
package struct MessagePackTree {
    let root: UnsafePointer<msgpack_object>

    /// The tree at `root`, a `msgpack_object` (the core hands it over untyped).
    package init(unsafeRoot root: UnsafeRawPointer) {
        self.root = root.assumingMemoryBound(to: msgpack_object.self)
    }

    init(root: UnsafePointer<msgpack_object>) { self.root = root }
}

extension MessagePackDecoder {
    /// Decodes a tree the core already unpacked, after checking it against its limits.
    package func decode<T: Decodable>(_ type: T.Type, fromTree tree: MessagePackTree) throws -> T {
        let root = tree.root
        // A scalar reply (bytes, a string, a number) needs no decoder state: read it directly,
        // without touching this thread's scratch.
        if let kind = MessagePackScalar.direct(T.self, for: root) {
            return try MessagePackDecoderState.scalar(T.self, root, []) {
                o throws(MessagePackUnboxFailure) in try MessagePackUnbox.scalar(o, kind, as: T.self)
            }
        }
        return try withState { state in
            state.reset(root)
            return try state.decodeValue(type, at: root, depth: 0)
        }
    }

    /// Decodes a scalar `T` (bytes, a string, a number) straight from its encoded bytes, with
    /// no tree, and hands it to `deliver`; false (nothing delivered) when `T` is no such
    /// scalar or the bytes hold none: then decode from the tree. Returns no `T?`, whose
    /// metadata generic code would look up on every call.
    package func decodeScalar<T: Decodable>(
        _ type: T.Type, fromBytes bytes: UnsafeRawBufferPointer, into deliver: (T) -> Void
    ) throws -> Bool {
        guard let kind = MessagePackScalar(T.self),
              var object = MessagePackScalarHeader.object(bytes, for: kind) else { return false }
        try withUnsafePointer(to: &object) { deliver(try decode(type, fromTree: MessagePackTree(root: $0))) }
        return true
    }

    /// Decodes element 0 of a params array the core already unpacked.
    package func decodeFirstParam<T: Decodable>(_ type: T.Type, fromTree tree: MessagePackTree) throws -> T {
        let first = try Self.firstParam(of: tree.root, as: type)
        return try withState { state in
            state.reset(first)
            return try state.decodeValue(type, at: first, depth: 0, extra: [], key: MessagePackKey(index: 0))
        }
    }

    /// This thread's reusable decoder state, or a fresh one when it is busy.
    private func withState<R>(_ body: (MessagePackDecoderState) throws -> R) rethrows -> R {
        try ThreadScratch.withCurrent { scratch in
            guard let state = scratch.beginDecoding() else { return try body(MessagePackDecoderState()) }
            defer { scratch.endDecoding() }
            return try body(state)
        }
    }
}
