import Synchronization

/// A token bucket that bounds retries (and backup requests) to a fraction of calls, so a
/// failing cluster sees at most `1 + ratio` times its normal load instead of every call
/// multiplied by the attempt count (gRPC's retry throttling, Finagle's RetryBudget).
///
/// Every first attempt deposits `ratio` tokens, up to `maximum`; each retry withdraws one
/// whole token, and is not made when none is left. The bucket starts full, so a quiet
/// client can still retry its first few failures. Lock-free: one atomic integer of
/// thousandths of a token.
public final class RPCRetryBudget: Sendable {
    /// Tokens each call deposits (0.1: one retry per ten calls in the long run).
    public let ratio: Double
    /// The bucket's capacity in tokens, also its starting level.
    public let maximum: Double
    private let milliTokens: Atomic<Int>
    private let deposit: Int
    private let cap: Int

    /// A budget of `ratio` retries per call, with up to `maximum` saved up.
    public init(ratio: Double = 0.1, maximum: Double = 10) {
        self.ratio = max(ratio, 0)
        self.maximum = min(max(maximum, 0), 1e12) // held in thousandths in an Int
        deposit = Int(min(self.ratio, 1e12) * 1000)
        cap = Int(self.maximum * 1000)
        milliTokens = Atomic(cap)
    }

    /// A budget that never refuses (for tests and for clusters where retries are free).
    public static var unlimited: RPCRetryBudget { RPCRetryBudget(ratio: 1, maximum: 1e12) }

    /// Tokens left now.
    public var tokens: Double { Double(milliTokens.load(ordering: .relaxed)) / 1000 }

    /// Records a first attempt.
    public func recordCall() {
        guard deposit > 0 else { return }
        var current = milliTokens.load(ordering: .relaxed)
        while current < cap {
            let (done, seen) = milliTokens.compareExchange(
                expected: current, desired: min(current + deposit, cap), ordering: .relaxed)
            if done { return }
            current = seen
        }
    }

    /// Takes one token for a retry; false (and nothing taken) when fewer than one is left.
    public func tryWithdraw() -> Bool {
        var current = milliTokens.load(ordering: .relaxed)
        while current >= 1000 {
            let (done, seen) = milliTokens.compareExchange(
                expected: current, desired: current - 1000, ordering: .relaxed)
            if done { return true }
            current = seen
        }
        return false
    }

    /// Gives back a token taken by `tryWithdraw` for a retry that was then not made.
    func refund() {
        var current = milliTokens.load(ordering: .relaxed)
        while current < cap {
            let (done, seen) = milliTokens.compareExchange(
                expected: current, desired: min(current + 1000, cap), ordering: .relaxed)
            if done { return }
            current = seen
        }
    }
}
