import Synchronization

/// A lock-free random source shared by all callers: SplitMix64 over an atomic counter.
/// Each draw advances the counter by the golden gamma and mixes the result, so a given
/// seed yields the same sequence of draws (in whatever order threads take them).
final class SharedRandom: Sendable {
    private let state: Atomic<UInt64>

    /// A source starting from `seed`, or from the system's randomness when nil.
    init(seed: UInt64?) {
        state = Atomic(seed ?? UInt64.random(in: .min ... .max))
    }

    /// The next 64 random bits.
    func next() -> UInt64 {
        Self.mix(state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue)
    }

    /// A value in `0..<bound` (bound > 0); the modulo bias is negligible for server counts.
    func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// SplitMix64's finalizer: a good 64-bit mixer, also used to hash.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// FNV-1a over UTF-8, then mixed: a stable 64-bit hash (Swift's Hasher is seeded per
/// process, which would move every key on a restart).
func stableHash(_ text: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in text.utf8 {
        h ^= UInt64(byte)
        h = h &* 0x0000_0100_0000_01B3
    }
    return SharedRandom.mix(h)
}
