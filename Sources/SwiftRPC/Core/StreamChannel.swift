internal import CRPCCore
internal import Glibc
import Synchronization

/// One stream's Swift side, the same on client and server: its C handle, the elements that
/// arrived and wait for their consumer, the credit granted back as the consumer takes them,
/// and the writer's wait for credit.
///
/// Flow control is the point: the core delivers an element only within the window this side
/// granted, and this side grants more only as its consumer takes elements (once half the
/// window is taken), so a slow consumer holds at most its window here.
///
/// `@unchecked Sendable`: all state is behind `state`'s lock. The C handle's uses are
/// counted under it, so no call can reach it after ``releaseHandle()`` dropped the reference.
final class StreamChannel: @unchecked Sendable {
    /// An element as it arrived: its encoded value and metadata, and what it cost in credit.
    struct Element: Sendable {
        let bytes: [UInt8]
        let metadata: RPCMetadata
        let frameBytes: Int
    }

    private struct State {
        var handle: OpaquePointer?
        /// ``withHandle(_:)`` calls under way, and whether the reference is to go after them.
        var handleUsers = 0
        var released = false
        var inbox: [Element] = []
        var head = 0
        var inboxWaiter: UnsafeContinuation<Void, Never>?
        /// nil: more may come; .some(nil): the peer finished; .some(error): it failed.
        var inboundEnd: RPCError??
        var takenMessages = 0
        var takenBytes = 0
        /// Bumped by every grant of credit to us: a writer refused for credit waits for it.
        var writableEpoch: UInt64 = 0
        var writeWaiter: UnsafeContinuation<Void, Never>?
        /// Why nothing more can be sent (set once the stream is over).
        var over: RPCError?
    }

    private let state: Locked<State>
    private typealias Waiter = UnsafeContinuation<Void, Never>
    /// Who may be waiting: the consumer (for an element or the end) or the writer (for credit).
    private enum Slot { case inbox, writer }
    /// Whether an element has gone either way (a cluster never retries such a stream).
    private let flowedFlag = Atomic<Bool>(false)
    var flowed: Bool { flowedFlag.load(ordering: .relaxed) }
    /// What this side lets its peer send ahead.
    let window: RPCStreamWindow
    /// Called (once) when the consumer's task is cancelled while it waits for an element.
    private let onConsumerCancelled: @Sendable () -> Void

    /// A channel for a stream whose handle comes with ``attach(_:)`` (events may arrive
    /// before it: the core delivers on the loop as soon as the stream is open).
    init(window: RPCStreamWindow, onConsumerCancelled: @escaping @Sendable () -> Void = {}) {
        self.state = Locked(State(handle: nil))
        self.window = window
        self.onConsumerCancelled = onConsumerCancelled
    }

    /// Hands over the application's reference to the C stream.
    func attach(_ handle: OpaquePointer) {
        state.withLock { $0.handle = handle }
    }

    /// Runs `body` with the C handle while the application still holds it; nil after
    /// ``releaseHandle()``. The lock is not held during `body`: on the loop thread a C call
    /// can deliver the stream's events at once (a cancel ends it), which take the lock.
    /// Instead each use is counted, and the reference is dropped by the last one out.
    func withHandle<R>(_ body: (OpaquePointer) -> R) -> R? {
        guard let (handle, _) = borrowHandle() else { return nil }
        defer { giveBack(handle) }
        return body(handle)
    }

    /// Counts a use of the handle (nil once released), with the writer's credit epoch as
    /// of then: one lock round for both on the send path.
    private func borrowHandle() -> (OpaquePointer, epoch: UInt64)? {
        state.withLock { s in
            guard let handle = s.handle, !s.released else { return nil }
            s.handleUsers += 1
            return (handle, s.writableEpoch)
        }
    }

    /// Ends a use; the last one out after ``releaseHandle()`` drops the reference.
    private func giveBack(_ handle: OpaquePointer) {
        let drop = state.withLock { s -> Bool in
            s.handleUsers -= 1
            guard s.released, s.handleUsers == 0, s.handle != nil else { return false }
            s.handle = nil
            return true
        }
        if drop { crpc_stream_release(handle) }
    }

    /// Drops the application's reference to the C stream, once (after the uses under way).
    func releaseHandle() {
        let handle = state.withLock { s -> OpaquePointer? in
            s.released = true
            guard s.handleUsers == 0, let handle = s.handle else { return nil }
            s.handle = nil
            return handle
        }
        if let handle { crpc_stream_release(handle) }
    }

    // MARK: Waiting

    /// Changes the state with `change` and wakes whoever waits in `slot`.
    private func update(waking slot: Slot, _ change: (inout State) -> Void = { _ in }) {
        let waiter = state.withLock { s -> Waiter? in
            change(&s)
            switch slot {
            case .inbox: defer { s.inboxWaiter = nil }; return s.inboxWaiter
            case .writer: defer { s.writeWaiter = nil }; return s.writeWaiter
            }
        }
        waiter?.resume()
    }

    /// Suspends in `slot` until `ready` holds (checked under the lock, then again by every
    /// wake-up's caller); with `cancellable`, the task's cancellation wakes it too.
    private func wait(in slot: Slot, cancellable: Bool = true, until ready: (State) -> Bool) async {
        func park(_ c: Waiter) {
            let now = state.withLock { s -> Bool in
                if ready(s) { return true }
                switch slot {
                case .inbox: s.inboxWaiter = c
                case .writer: s.writeWaiter = c
                }
                return false
            }
            if now { c.resume() }
        }
        guard cancellable else { return await withUnsafeContinuation(park) }
        await withTaskCancellationHandler {
            await withUnsafeContinuation(park)
        } onCancel: {
            update(waking: slot)
        }
    }

    // MARK: Inbound (the core delivers on the loop thread; the consumer takes in its task)

    /// An element arrived (loop thread): `bytes` are copied, the frame dies after this.
    func received(_ value: UnsafeRawBufferPointer, metadata: RPCMetadata, frameBytes: Int) {
        flowedFlag.store(true, ordering: .relaxed)
        let element = Element(bytes: Array(value), metadata: metadata, frameBytes: frameBytes)
        update(waking: .inbox) { $0.inbox.append(element) }
    }

    /// The peer will send nothing more: `error` nil after a half-close or an end, else why
    /// the stream failed. Only the first call counts.
    func finishInbound(_ error: RPCError?) {
        update(waking: .inbox) { s in if s.inboundEnd == nil { s.inboundEnd = .some(error) } }
    }

    /// The next element, in order; nil once the peer finished; throws why the stream failed,
    /// or `.cancelled` when the consumer's task is cancelled. Grants credit for what it takes.
    func next() async throws(RPCError) -> Element? {
        while true {
            enum Step { case element(Element, grant: (Int, Int)?), finished, failed(RPCError), wait }
            let step = state.withLock { s -> Step in
                if s.head < s.inbox.count {
                    let element = s.inbox[s.head]
                    s.head += 1
                    if s.head == s.inbox.count {
                        s.inbox.removeAll(keepingCapacity: true)
                        s.head = 0
                    } else if s.head >= 16 && s.head * 2 >= s.inbox.count {
                        // A consumer that never quite catches up must not keep what it took:
                        // drop the taken half (amortised O(1) per element).
                        s.inbox.removeFirst(s.head)
                        s.head = 0
                    }
                    return .element(element, grant: take(&s, element))
                }
                if let end = s.inboundEnd { return end.map(Step.failed) ?? .finished }
                return .wait
            }
            switch step {
            case .element(let element, let grant):
                if let (messages, bytes) = grant {
                    _ = withHandle { crpc_stream_grant($0, UInt32(clamping: messages), UInt32(clamping: bytes)) }
                }
                return element
            case .finished:
                return nil
            case .failed(let error):
                throw error
            case .wait:
                if Task.isCancelled {
                    onConsumerCancelled()
                    throw RPCError(.cancelled, "the stream's consumer was cancelled")
                }
                await wait(in: .inbox) { $0.head < $0.inbox.count || $0.inboundEnd != nil }
            }
        }
    }

    /// Counts an element taken; returns the credit to grant back once half the window is
    /// taken (so the peer never runs dry while the consumer keeps up).
    private func take(_ s: inout State, _ element: Element) -> (Int, Int)? {
        s.takenMessages += 1
        s.takenBytes += element.frameBytes
        guard s.takenMessages * 2 >= window.messages || s.takenBytes * 2 >= window.bytes else { return nil }
        defer { (s.takenMessages, s.takenBytes) = (0, 0) }
        return (s.takenMessages, s.takenBytes)
    }

    /// Waits until an element has arrived or the peer finished; true for an element (it
    /// stays for ``next()``), false for the end.
    func firstArrival() async -> Bool {
        while true {
            let ready: Bool? = state.withLock { s in
                s.head < s.inbox.count ? true : s.inboundEnd != nil ? false : nil
            }
            if let ready { return ready }
            await wait(in: .inbox, cancellable: false) { $0.head < $0.inbox.count || $0.inboundEnd != nil }
        }
    }

    /// Elements that arrived and were not taken yet.
    var buffered: Int { state.withLock { $0.inbox.count - $0.head } }

    /// Elements held in memory, taken ones not yet dropped included.
    var held: Int { state.withLock { $0.inbox.count } }

    // MARK: Outbound

    /// Credit arrived (loop thread): a writer waiting for it tries again.
    func wakeWriter() {
        update(waking: .writer) { $0.writableEpoch &+= 1 }
    }

    /// The stream is over: writes from now on throw `error`. Only the first call counts.
    func endWriting(_ error: RPCError) {
        update(waking: .writer) { s in if s.over == nil { s.over = error } }
    }

    /// Sends one encoded element, waiting while the peer's credit is used up.
    func send(_ value: [UInt8], metadata: RPCMetadata) async throws(RPCError) {
        while true {
            guard let (handle, epoch) = borrowHandle() else {
                throw state.withLock { $0.over } ?? RPCError(.cancelled, "the stream has ended")
            }
            let rc = value.withUnsafeBytes { bytes in
                ExtEntries.with(metadata) { ext, count in
                    crpc_stream_send(handle, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                     UInt32(clamping: bytes.count), ext, count)
                }
            }
            giveBack(handle)
            switch rc {
            case 0:
                flowedFlag.store(true, ordering: .relaxed)
                return
            case -EAGAIN:
                if Task.isCancelled { throw RPCError(.cancelled, "the stream's writer was cancelled") }
                await waitForCredit(after: epoch)
                if let over = state.withLock({ $0.over }) { throw over }
            case -EPIPE:
                throw state.withLock { $0.over } ?? RPCError(.cancelled, "the stream has ended")
            case -EMSGSIZE:
                throw RPCError(.resourceExhausted, "stream element larger than the maximum frame size")
            case -EINVAL:
                throw RPCError(.internal, "the stream element is not one MessagePack value")
            default:
                throw CoreErrors.error(rc, "cannot send the stream element")
            }
        }
    }

    /// Returns once credit was granted after `epoch`, the stream is over, or the task is
    /// cancelled.
    private func waitForCredit(after epoch: UInt64) async {
        await wait(in: .writer) { $0.writableEpoch != epoch || $0.over != nil }
    }
}
