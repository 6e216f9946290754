internal import CMsgPack

extension MessagePackDecoder {
    /// Decodes a tree CRPCCore already unpacked, after checking it against its limits:
    /// the core's copy of a frame is decoded where it lies, with no second parse.
    func decode<T: Decodable>(_ type: T.Type, fromTree root: UnsafePointer<msgpack_object>) throws -> T {
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

    /// Decodes element 0 of a params array the core already unpacked.
    func decodeFirstParam<T: Decodable>(_ type: T.Type, fromTree root: UnsafePointer<msgpack_object>) throws -> T {
        let first = try Self.firstParam(of: root, as: type)
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
