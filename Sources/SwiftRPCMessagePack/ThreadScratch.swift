internal import Glibc

/// Per-thread encoding and decoding state, so the per-call path allocates no writer and no
/// decoder on any thread: loop threads, Swift concurrency's pool threads, plain threads.
///
/// `@unchecked Sendable`: each instance is reachable only through its own thread's
/// thread-local slot, so only that thread ever touches it.
package final class ThreadScratch: @unchecked Sendable {
    private let writer = MessagePackWriter(initialCapacity: 1024)
    private var writerBusy = false
    private let decoderState = MessagePackDecoderState()
    private var decoderBusy = false

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        // The destructor releases a thread's scratch when the thread exits.
        pthread_key_create(&key) { Unmanaged<ThreadScratch>.fromOpaque($0!).release() }
        return key
    }()

    /// Runs `body` with the calling thread's scratch (made on first use), borrowed: the
    /// thread-local slot keeps it alive for the whole call, so this takes no reference.
    @inline(__always)
    package static func withCurrent<R>(_ body: (ThreadScratch) throws -> R) rethrows -> R {
        let raw = pthread_getspecific(key) ?? Unmanaged.passUnretained(make()).toOpaque()
        return try Unmanaged<ThreadScratch>.fromOpaque(raw)._withUnsafeGuaranteedRef(body)
    }

    /// Makes this thread's scratch; the thread-local slot owns it.
    @inline(never)
    private static func make() -> ThreadScratch {
        let made = ThreadScratch()
        pthread_setspecific(key, Unmanaged.passRetained(made).toOpaque())
        return made
    }

    /// This thread's writer, emptied, or nil while it is in use (an `encode(to:)` that
    /// itself makes a call); give it back with `endWriting()`.
    package func beginWriting() -> MessagePackWriter? {
        if writerBusy { return nil }
        writerBusy = true
        writer.reset()
        return writer
    }

    package func endWriting() { writerBusy = false }

    /// This thread's decoder state, or nil while it is in use (a decode that starts another
    /// decode); give it back with `endDecoding()`.
    func beginDecoding() -> MessagePackDecoderState? {
        if decoderBusy { return nil }
        decoderBusy = true
        return decoderState
    }

    func endDecoding() { decoderBusy = false }
}
