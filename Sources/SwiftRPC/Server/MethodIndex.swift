internal import Glibc

/// The handlers keyed by the UTF-8 bytes of their names, so a request's method is found as
/// the bytes it arrived as: no `String` is made and no `Hasher` runs per request (together
/// they were about 6% of the server's CPU on W2). Built once per change of the handler
/// table, read without locks from every loop thread.
///
/// The probe table holds plain integers and the names sit in one byte array, so a lookup
/// touches no reference count until it hands out the handler it found.
struct MethodIndex: Sendable {
    /// Where one name's bytes are in `names`, and its handler's index; `length == 0` marks
    /// an empty slot (no registered name is empty).
    private struct Slot {
        var offset: Int32 = 0
        var length: Int32 = 0
        var handler: Int32 = 0
    }

    /// Open addressing with linear probing, at most half full, so every probe run ends at
    /// an empty slot.
    private let slots: [Slot]
    private let mask: Int
    private let names: [UInt8]
    private let handlers: [RegisteredHandler]
    /// `handlers` again, unretained (`handlers` keeps them alive), so a request can borrow
    /// its handler without a retain and a release.
    private let borrowed: [Unmanaged<RegisteredHandler>]

    init(_ table: [String: RegisteredHandler]) {
        var capacity = 8
        while capacity < table.count * 2 { capacity *= 2 }
        var slots = [Slot](repeating: Slot(), count: capacity)
        var names: [UInt8] = []
        var handlers: [RegisteredHandler] = []
        for (name, handler) in table where !name.isEmpty {
            let utf8 = Array(name.utf8)
            var i = utf8.withUnsafeBytes { Self.hash($0) } & (capacity - 1)
            while slots[i].length != 0 { i = (i + 1) & (capacity - 1) }
            slots[i] = Slot(offset: Int32(names.count), length: Int32(utf8.count), handler: Int32(handlers.count))
            names += utf8
            handlers.append(handler)
        }
        self.slots = slots
        self.mask = capacity - 1
        self.names = names
        self.handlers = handlers
        self.borrowed = handlers.map { Unmanaged.passUnretained($0) }
    }

    /// The handler registered under `name`, unretained: valid only while this index is
    /// alive. Lets a request borrow its handler with no reference counting.
    func borrowedHandler(for name: UnsafeRawBufferPointer) -> Unmanaged<RegisteredHandler>? {
        position(of: name).map { borrowed[$0] }
    }

    /// Where the handler registered under `name` is in `handlers`.
    private func position(of name: UnsafeRawBufferPointer) -> Int? {
        guard let base = name.baseAddress, !name.isEmpty else { return nil }
        let found: Int? = slots.withUnsafeBufferPointer { slots in
            names.withUnsafeBytes { names in
                var i = Self.hash(name) & mask
                while slots[i].length != 0 {
                    let slot = slots[i]
                    if Int(slot.length) == name.count,
                       memcmp(names.baseAddress! + Int(slot.offset), base, name.count) == 0 {
                        return Int(slot.handler)
                    }
                    i = (i + 1) & mask
                }
                return nil
            }
        }
        return found
    }

    /// Method names are short: their length and their first and last eight bytes (which
    /// overlap below 16) tell them apart, and one multiply mixes them. FNV-1a over every
    /// byte cost 4% of the server's CPU on W2. This table is not keyed by anything a peer
    /// can grow (only registered names are stored), so collisions only lengthen a probe,
    /// and the comparison of the bytes decides.
    private static func hash(_ name: UnsafeRawBufferPointer) -> Int {
        let count = name.count
        var first: UInt64 = 0, last: UInt64 = 0
        if count >= 8 {
            first = name.loadUnaligned(as: UInt64.self)
            last = name.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        } else {
            for (i, byte) in name.enumerated() { first |= UInt64(byte) << (8 * UInt64(i)) }
        }
        var h = (first ^ (last &* 0x9e37_79b9_7f4a_7c15) ^ UInt64(count)) &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 31
        return Int(truncatingIfNeeded: h)
    }
}
