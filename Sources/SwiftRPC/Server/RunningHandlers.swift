import Dispatch

/// The async handlers a server is running — calls by connection and msgid, notifications by
/// connection — and the deadlines of the calls that have one.
///
/// Everything a handler holds here is given back the moment it ends: its entry, its place in
/// its connection's table and its deadline (the deadlines are an indexed min-heap, so a call
/// that finishes early takes its deadline out at once; nothing waits for the deadline to
/// pass). One dispatch timer per server fires at the earliest deadline.
///
/// After a burst (thousands of handlers, most of them now ended) the allocator is asked to
/// hand its free memory back to the kernel, at most once a second and off the caller's
/// thread: glibc otherwise keeps what the burst's tasks used in its per-thread arenas.
///
/// - A cancel frame cancels the call's task (``cancel(_:)``); the handler then ends and
///   answers as usual.
/// - A passed deadline takes the call out (so its handler's own answer is dropped), cancels
///   the task and hands the call to `onDeadline`, which answers 4.
/// - A lost connection cancels every handler it still has, notifications included, at the
///   cost of that connection's handlers only; after an orderly end (its client ended its
///   input and every call was answered) its notifications may run on for a grace time
///   (``connectionEnded(_:grace:)``).
///
/// `@unchecked Sendable`: all state is behind `state`'s lock; `timer` is a dispatch source,
/// whose `schedule` may be called from any thread (done under the lock, so the armed time
/// always matches the heap's top).
final class RunningHandlers: @unchecked Sendable {
    struct Key: Hashable, Sendable {
        var conn: UInt64
        var msgid: UInt32
    }

    /// Names one running handler: its slot and the id that slot had when it started (slots
    /// are reused; an id never is).
    struct Ticket: Sendable {
        fileprivate let slot: Int
        fileprivate let id: UInt64
    }

    /// A call whose deadline passed before its handler answered.
    struct Expired: Sendable {
        let key: Key
        let replies: ReplySink
    }

    fileprivate struct Slot {
        var id: UInt64 = 0               // 0: free
        var conn: UInt64 = 0
        var msgid: UInt32 = 0
        var isCall = false
        var task: Task<Void, Never>?
        var replies: ReplySink?
        var deadline: UInt64 = 0         // DispatchTime uptime ns; 0: none
        var heapIndex = -1               // where it sits in `heap`, -1: not there
    }

    /// A connection's handlers: calls by msgid, and notifications.
    fileprivate struct Connection {
        var calls: [UInt32: Int] = [:]
        var notifications: Set<Int> = []
        /// Calls whose msgid a later request reused while they ran (a peer breaking the
        /// protocol's uniqueness rule): no cancel frame can name them, but the
        /// connection's end must still reach them.
        var displaced: Set<Int> = []
        var isEmpty: Bool { calls.isEmpty && notifications.isEmpty && displaced.isEmpty }

        /// Takes slot `index` out; true when the connection has no handler left.
        mutating func remove(_ index: Int, msgid: UInt32, isCall: Bool) -> Bool {
            if !isCall {
                notifications.remove(index)
            } else if calls[msgid] == index {
                calls[msgid] = nil
            } else {
                displaced.remove(index)
            }
            return isEmpty
        }
        var all: [Int] { Array(calls.values) + Array(notifications) + Array(displaced) }
    }

    fileprivate struct State {
        var slots: [Slot] = []
        var freeSlots: [Int] = []
        var connections: [UInt64: Connection] = [:]
        var nextID: UInt64 = 1
        var calls = 0
        var notifications = 0
        /// Slot indices ordered by deadline, earliest first.
        var heap: [Int] = []
        /// The time the timer is set for (0: not set).
        var armedFor: UInt64 = 0
        /// The most handlers running at once since memory was last handed back.
        var peak = 0
    }

    /// A burst this large that has mostly ended hands memory back.
    static let burstSize = 1024

    private let state = Locked(State())
    private let timer: DispatchSourceTimer
    private let notificationsPerConnection: Int
    private let notificationsPerServer: Int

    /// - Parameters:
    ///   - notificationsPerConnection: notification handlers one connection may have running.
    ///   - notificationsPerServer: and all connections together.
    init(notificationsPerConnection: Int, notificationsPerServer: Int) {
        self.notificationsPerConnection = max(notificationsPerConnection, 1)
        self.notificationsPerServer = max(notificationsPerServer, 1)
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "SwiftRPC.deadlines"))
    }

    /// Starts watching deadlines: `onDeadline` answers each call whose deadline passed
    /// (once per such call, on the timer's queue, after its task was cancelled). Once,
    /// before the first call starts.
    func watchDeadlines(_ onDeadline: @escaping @Sendable (Expired) -> Void) {
        timer.setEventHandler { [weak self] in
            // weak: the source must not keep its owner alive; deinit cancels it.
            guard let self else { return }
            for expired in self.expire(now: DispatchTime.now().uptimeNanoseconds) { onDeadline(expired) }
        }
        timer.activate()
    }

    // activate: a source released while never activated traps in libdispatch (a no-op when
    // watchDeadlines already did).
    deinit {
        timer.activate()
        timer.cancel()
    }

    // MARK: Calls

    /// Records the task `make` starts as the handler of `key`, with the caller's deadline if
    /// it has one. The lock is held while the task is made, so the task's own ``finish(_:)``
    /// cannot run before it is recorded.
    func startCall(_ key: Key, timeout: Duration?, replies: ReplySink,
                   _ make: (Ticket) -> Task<Void, Never>) {
        let deadline = timeout.map { Self.deadline(after: $0) } ?? 0
        state.withLock { s in
            let ticket = s.allocate(conn: key.conn, msgid: key.msgid, isCall: true)
            if let earlier = s.connections[key.conn, default: Connection()].calls.updateValue(ticket.slot, forKey: key.msgid) {
                s.connections[key.conn]!.displaced.insert(earlier)
            }
            s.calls += 1
            s.slots[ticket.slot].replies = replies
            s.slots[ticket.slot].task = make(ticket)
            if deadline != 0 {
                s.slots[ticket.slot].deadline = deadline
                s.heapPush(ticket.slot)
                rearm(&s)
            }
        }
    }

    /// The handler of `ticket` has ended. True when it is the one to answer; false when its
    /// deadline already did.
    func finish(_ ticket: Ticket) -> Bool {
        let (answer, trim) = state.withLock { s -> (Bool, Bool) in
            // A call whose deadline answered has no slot any more (the table may even have
            // shrunk since): its handler's own answer is dropped.
            guard ticket.slot < s.slots.count, s.slots[ticket.slot].id == ticket.id else { return (false, false) }
            let hadDeadline = s.slots[ticket.slot].heapIndex >= 0
            s.release(ticket.slot)
            if hadDeadline { rearm(&s) }
            return (true, s.burstEnded())
        }
        if trim { FreeMemory.releaseSoon() }
        return answer
    }

    /// Cancels the handler of `key` if it is still running (a cancel frame).
    func cancel(_ key: Key) {
        state.withLock { s in
            s.connections[key.conn]?.calls[key.msgid].flatMap { s.slots[$0].task }
        }?.cancel()
    }

    // MARK: Notifications

    /// Starts the task `make` makes as a notification handler of `conn`, unless `conn` or
    /// the server already runs as many as allowed (then nothing starts: false).
    func startNotification(conn: UInt64, _ make: (Ticket) -> Task<Void, Never>) -> Bool {
        state.withLock { s in
            guard s.notifications < notificationsPerServer,
                  (s.connections[conn]?.notifications.count ?? 0) < notificationsPerConnection else { return false }
            let ticket = s.allocate(conn: conn, msgid: 0, isCall: false)
            s.connections[conn, default: Connection()].notifications.insert(ticket.slot)
            s.notifications += 1
            s.slots[ticket.slot].task = make(ticket)
            return true
        }
    }

    // MARK: Connections

    /// `conn` has closed: its calls' replies have nowhere to go, so their handlers are
    /// cancelled now. Its notification handlers are too, unless `grace` is given (an
    /// orderly end): then they may run that much longer. Each ends as usual and gives its
    /// place back.
    func connectionEnded(_ conn: UInt64, grace: Duration? = nil) {
        let graceDeadline = grace.map { Self.deadline(after: $0) } ?? 0
        let tasks: [Task<Void, Never>] = state.withLock { s in
            guard let connection = s.connections[conn] else { return [] }
            var cancel: [Task<Void, Never>] = []
            for index in connection.all {
                if graceDeadline != 0 && !s.slots[index].isCall {
                    if s.slots[index].heapIndex < 0 {
                        s.slots[index].deadline = graceDeadline
                        s.heapPush(index)
                    }
                } else if let task = s.slots[index].task {
                    cancel.append(task)
                }
            }
            rearm(&s)
            return cancel
        }
        // Cancelling runs each task's cancellation handlers right here, on the loop thread
        // that saw the close: thousands at once stalled that loop's other connections
        // (measured: a fresh call waited 77-142 ms while 5 connections with 4,000 running
        // calls each were reset). Many go to a background queue instead.
        if tasks.count <= Self.cancelInline {
            for task in tasks { task.cancel() }
        } else {
            DispatchQueue.global(qos: .utility).async { for task in tasks { task.cancel() } }
        }
    }

    /// Up to this many handlers of a closed connection are cancelled on the spot.
    static let cancelInline = 64

    // MARK: Counts

    /// Call handlers running now.
    var count: Int { state.withLock { $0.calls } }

    /// Notification handlers running now.
    var notificationCount: Int { state.withLock { $0.notifications } }

    /// Deadlines still watched (one per running call that has one).
    var deadlineCount: Int { state.withLock { $0.heap.count } }

    // MARK: Deadlines

    /// Takes out every call due by `now`, cancels their tasks, and sets the timer for the
    /// next deadline.
    private func expire(now: UInt64) -> [Expired] {
        let (expired, tasks, trim) = state.withLock { s -> ([Expired], [Task<Void, Never>], Bool) in
            var expired: [Expired] = []
            var tasks: [Task<Void, Never>] = []
            while let top = s.heap.first, s.slots[top].deadline <= now {
                let slot = s.slots[top]
                // A call is answered 4; a notification (past its grace) just stops.
                if slot.isCall, let replies = slot.replies {
                    expired.append(Expired(key: Key(conn: slot.conn, msgid: slot.msgid), replies: replies))
                }
                if let task = slot.task { tasks.append(task) }
                s.release(top)
            }
            s.armedFor = 0
            rearm(&s)
            return (expired, tasks, s.burstEnded())
        }
        for task in tasks { task.cancel() }
        if trim { FreeMemory.releaseSoon() }
        return expired
    }


    /// The uptime `timeout` from now, saturating: a deadline past what dispatch can time
    /// (about 146 years) is no deadline. 0 is never returned for a real deadline.
    static func deadline(after timeout: Duration) -> UInt64 {
        let (ns, overflow) = UInt64(max(timeout.microseconds, 1)).multipliedReportingOverflow(by: 1000)
        let (at, late) = DispatchTime.now().uptimeNanoseconds.addingReportingOverflow(ns)
        return overflow || late || at >= 1 << 62 ? 0 : at
    }

    /// Sets the timer for the heap's earliest deadline, if it is not set for it already.
    /// Called with the lock held.
    private func rearm(_ s: inout State) {
        guard let top = s.heap.first else { return }  // a timer that fires early finds nothing due
        let earliest = s.slots[top].deadline
        guard s.armedFor == 0 || earliest < s.armedFor else { return }
        s.armedFor = earliest
        timer.schedule(deadline: DispatchTime(uptimeNanoseconds: earliest), leeway: .milliseconds(1))
    }
}

// MARK: - Slots and the heap (lock held)

extension RunningHandlers.State {
    fileprivate mutating func allocate(conn: UInt64, msgid: UInt32, isCall: Bool) -> RunningHandlers.Ticket {
        let index: Int
        if let free = freeSlots.popLast() {
            index = free
        } else {
            index = slots.count
            slots.append(.init())
        }
        let id = nextID
        nextID += 1
        slots[index] = .init(id: id, conn: conn, msgid: msgid, isCall: isCall)
        peak = Swift.max(peak, calls + notifications + 1)
        return .init(slot: index, id: id)
    }

    /// True once per burst: when a peak of at least `burstSize` handlers has fallen to an
    /// eighth.
    fileprivate mutating func burstEnded() -> Bool {
        let running = calls + notifications
        guard peak >= RunningHandlers.burstSize, running <= peak / 8 else { return false }
        peak = running
        if running == 0 { // what the burst grew goes too
            slots = []
            freeSlots = []
            heap = []
            connections = [:]
        }
        return true
    }

    /// Frees a slot: out of its connection's table and the heap, its task reference dropped.
    fileprivate mutating func release(_ index: Int) {
        let slot = slots[index]
        if slot.heapIndex >= 0 { heapRemove(at: slot.heapIndex) }
        if slot.isCall { calls -= 1 } else { notifications -= 1 }
        // One look-up on the way (a second only when the connection has nothing left).
        if connections[slot.conn]?.remove(index, msgid: slot.msgid, isCall: slot.isCall) == true {
            connections[slot.conn] = nil
        }
        slots[index] = .init()
        freeSlots.append(index)
    }

    fileprivate mutating func heapPush(_ index: Int) {
        heap.append(index)
        slots[index].heapIndex = heap.count - 1
        siftUp(heap.count - 1)
    }

    private mutating func heapRemove(at position: Int) {
        let removed = heap[position]
        let last = heap.removeLast()
        slots[removed].heapIndex = -1
        guard position < heap.count else { return }
        heap[position] = last
        slots[last].heapIndex = position
        siftDown(position)
        siftUp(position)
    }

    private func earlier(_ a: Int, _ b: Int) -> Bool { slots[heap[a]].deadline < slots[heap[b]].deadline }

    private mutating func swapAt(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        slots[heap[a]].heapIndex = a
        slots[heap[b]].heapIndex = b
    }

    private mutating func siftUp(_ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard earlier(i, parent) else { return }
            swapAt(i, parent)
            i = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let left = 2 * i + 1, right = left + 1
            var least = i
            if left < heap.count && earlier(left, least) { least = left }
            if right < heap.count && earlier(right, least) { least = right }
            if least == i { return }
            swapAt(i, least)
            i = least
        }
    }
}
