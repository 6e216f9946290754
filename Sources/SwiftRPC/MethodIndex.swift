internal import Glibc

/// The handlers keyed by the UTF-8 bytes of their names, so a request's method is found as
/// the bytes it arrived as: no `String` is made and no `Hasher` runs per request (together
/// they were about 6% of the server's CPU on W2). Built once per change of the handler
/// table, read without locks from every loop thread.
struct MethodIndex: Sendable {
    private struct Slot: Sendable {
        let name: [UInt8]
        let handler: RegisteredHandler
    }

    /// Open addressing with linear probing, at most half full, so every probe run ends at
    /// an empty slot.
    private let slots: [Slot?]
    private let mask: Int

    init(_ handlers: [String: RegisteredHandler]) {
        var capacity = 8
        while capacity < handlers.count * 2 { capacity *= 2 }
        var slots = [Slot?](repeating: nil, count: capacity)
        for (name, handler) in handlers {
            let utf8 = Array(name.utf8)
            var i = Self.hash(utf8) & (capacity - 1)
            while slots[i] != nil { i = (i + 1) & (capacity - 1) }
            slots[i] = Slot(name: utf8, handler: handler)
        }
        self.slots = slots
        self.mask = capacity - 1
    }

    /// The handler registered under `name`, or nil.
    func handler(for name: UnsafeRawBufferPointer) -> RegisteredHandler? {
        guard let base = name.baseAddress, !name.isEmpty else { return nil }
        return slots.withUnsafeBufferPointer { slots in
            var i = Self.hash(name) & mask
            while let slot = slots[i] {
                if slot.name.count == name.count,
                   slot.name.withUnsafeBytes({ memcmp($0.baseAddress!, base, name.count) == 0 }) {
                    return slot.handler
                }
                i = (i + 1) & mask
            }
            return nil
        }
    }

    /// FNV-1a: method names are short, and this table is not keyed by anything a peer can
    /// grow (only registered names are stored), so a simple hash is enough.
    private static func hash(_ bytes: some Sequence<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return Int(truncatingIfNeeded: h ^ (h >> 32))
    }
}
