extension Duration {
    /// Whole milliseconds, rounded down, never negative.
    var milliseconds: Int64 { microseconds / 1000 }

    /// Whole microseconds, rounded down, never negative.
    var microseconds: Int64 {
        let c = components
        return max(c.seconds &* 1_000_000 &+ c.attoseconds / 1_000_000_000_000, 0)
    }
}
