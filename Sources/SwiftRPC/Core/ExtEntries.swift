internal import CRPCCore

/// Lays metadata out as the `crpc_ext_entry` array the core encodes, valid for one call.
enum ExtEntries {
    static func with<R>(_ metadata: RPCMetadata,
                        _ body: (UnsafePointer<crpc_ext_entry>?, UInt32) -> R) -> R {
        if metadata.isEmpty { return body(nil, 0) }
        // One flat buffer of keys and values, then entries pointing into it.
        var flat: [UInt8] = []
        var spans: [(key: Range<Int>, value: Range<Int>, binary: Bool)] = []
        for (key, value) in metadata.entries {
            let k = flat.count
            flat.append(contentsOf: key.utf8)
            let v = flat.count
            switch value {
            case .text(let s): flat.append(contentsOf: s.utf8)
            case .bytes(let b): flat.append(contentsOf: b)
            }
            let binary: Bool = if case .bytes = value { true } else { false }
            spans.append((k..<v, v..<flat.count, binary))
        }
        flat.append(0) // never empty, so the base address below is never nil
        return flat.withUnsafeBufferPointer { base in
            let entries = spans.map { span in
                var e = crpc_ext_entry()
                e.key = UnsafeRawPointer(base.baseAddress! + span.key.lowerBound).assumingMemoryBound(to: CChar.self)
                e.key_len = UInt32(span.key.count)
                e.value = base.baseAddress! + span.value.lowerBound
                e.value_len = UInt32(span.value.count)
                e.is_binary = span.binary ? 1 : 0
                return e
            }
            return entries.withUnsafeBufferPointer { body($0.baseAddress, UInt32($0.count)) }
        }
    }

    /// The metadata in a decoded message's ext entries.
    static func metadata(_ ext: UnsafePointer<crpc_ext_entry>?, _ count: Int) -> RPCMetadata {
        var md = RPCMetadata()
        guard let ext, count > 0 else { return md }
        for i in 0..<count {
            let e = ext[i]
            let key = String(decoding: UnsafeRawBufferPointer(start: e.key, count: Int(e.key_len)), as: UTF8.self)
            let bytes = UnsafeRawBufferPointer(start: e.value, count: Int(e.value_len))
            md.entries[key] = e.is_binary != 0 ? .bytes(Array(bytes)) : .text(String(decoding: bytes, as: UTF8.self))
        }
        return md
    }
}
