import Dispatch
import Glibc

/// SIGINT and SIGTERM, caught through Dispatch signal sources (as swift-service-lifecycle's
/// UnixSignals does): the default action is switched off first, so whichever thread the
/// kernel picks, the signal ends up here instead of killing the process.
///
/// `@unchecked Sendable`: `sources` is set once, before the object is returned, and only
/// kept alive after that; the semaphore is thread-safe.
final class Signals: @unchecked Sendable {
    private let received = DispatchSemaphore(value: 0)
    private var sources: [any DispatchSourceSignal] = []

    private init() {}

    /// Catches both signals: `wait()` returns once one has arrived.
    static func trapTermination() -> Signals {
        let signals = Signals()
        signals.sources = catching { [received = signals.received] _ in received.signal() }
        return signals
    }

    /// Runs `handler` with the signal's number (on a Dispatch thread) when SIGINT or SIGTERM
    /// arrives, instead of the process dying at once. Keep the result alive meanwhile.
    static func onTermination(_ handler: @escaping @Sendable (Int32) -> Void) -> Signals {
        let signals = Signals()
        signals.sources = catching(handler)
        return signals
    }

    /// Waits for one of them.
    func wait() { received.wait() }

    /// Ends the process by `sig`, as it would have ended without a handler (a shell then
    /// sees it interrupted). Callable from any thread.
    static func die(of sig: Int32) -> Never {
        signal(sig, SIG_DFL)
        // Pool threads may run with the signal blocked, which would leave it pending while
        // the process exits normally: unblock it here, then raise it on this very thread.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, sig)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        raise(sig)
        exit(128 + sig) // not reached: the default action of SIGINT and SIGTERM ends the process
    }

    private static func catching(_ handler: @escaping @Sendable (Int32) -> Void) -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { handler(sig) }
            source.resume()
            return source
        }
    }
}
