import Glibc
import Histogram

/// Monotonic nanoseconds.
@inline(__always)
func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// User + system CPU time of this process, in microseconds.
func processCPUMicros() -> UInt64 {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    let user = UInt64(usage.ru_utime.tv_sec) * 1_000_000 + UInt64(usage.ru_utime.tv_usec)
    let sys = UInt64(usage.ru_stime.tv_sec) * 1_000_000 + UInt64(usage.ru_stime.tv_usec)
    return user + sys
}

/// What one run recorded: latencies in nanoseconds, calls and failures.
struct Tally: Sendable {
    var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000_000,
                                      numberOfSignificantValueDigits: .three)
    var calls: UInt64 = 0
    var errors: UInt64 = 0
    var mismatches: UInt64 = 0

    mutating func record(latency: UInt64, ok: Bool, mismatch: Bool = false) {
        calls += 1
        if !ok { errors += 1 }
        if mismatch { mismatches += 1 }
        _ = histogram.record(max(latency, 1))
    }

    mutating func merge(_ other: Tally) {
        histogram.add(other.histogram)
        calls += other.calls
        errors += other.errors
        mismatches += other.mismatches
    }
}
