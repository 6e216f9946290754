import Glibc
import Synchronization

/// Ctrl-C (or SIGTERM) during a load run: the run stops where it stands and keeps what it
/// measured, the command prints that marked as interrupted, then dies of the same signal, so
/// a shell or script still sees an interrupted command (status 130 for Ctrl-C). A second
/// signal ends the process at once.
final class Interruption: Sendable {
    private final class Received: Sendable {
        let signal = Atomic<Int32>(0)
    }

    private let received: Received
    /// Kept alive for as long as the signals should be caught.
    private let signals: Signals?

    /// An interruption that never comes: for runs whose caller handles signals itself.
    static let never = Interruption(catchingSignals: false)

    /// Catches SIGINT and SIGTERM from now on.
    static func catchingTermination() -> Interruption { Interruption(catchingSignals: true) }

    private init(catchingSignals: Bool) {
        let received = Received()
        self.received = received
        signals = !catchingSignals ? nil : Signals.onTermination { sig in
            // A second one (the drain may wait up to 10 s on a stuck server) ends it at once.
            if received.signal.exchange(sig, ordering: .relaxed) != 0 { Signals.die(of: sig) }
        }
    }

    /// The signal that arrived, if one did.
    var receivedSignal: Int32? {
        let sig = received.signal.load(ordering: .relaxed)
        return sig == 0 ? nil : sig
    }

    /// Waits `seconds`, or less when a signal arrives meanwhile; returns false then.
    /// Polls every 50 ms: a signal handler cannot resume a task, and 20 wake-ups a second
    /// on a pool thread do not show in the measurements.
    func wait(seconds: Double) async -> Bool {
        let end = nowNanos() &+ UInt64(max(seconds, 0) * 1e9)
        while receivedSignal == nil {
            let now = nowNanos()
            if now >= end { return true }
            try? await Task.sleep(for: .nanoseconds(min(end - now, 50_000_000)))
        }
        return false
    }

    /// After a signal: flushes standard output and dies of that signal, as the process
    /// would have without the handler. Returns when none arrived.
    func endProcessIfInterrupted() {
        guard let sig = receivedSignal else { return }
        fflush(nil) // every output stream: what print() buffered would be lost to raise()
        Signals.die(of: sig)
    }
}
