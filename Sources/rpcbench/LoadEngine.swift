import Dispatch
import Glibc
import SwiftRPC
import Synchronization

/// Drives one workload against a server and measures it.
///
/// Closed loop (the default): every connection keeps `depth` calls in flight; each
/// completion records its latency and issues the next call. With the callback API this all
/// happens on the client's event-loop thread, so the engine's state is confined there.
///
/// Open loop (`rate`): a pacing thread issues calls at fixed intended times and latency is
/// measured from each call's intended send time, so a stalled server shows up as latency
/// instead of silently lowering the offered load (no coordinated omission).
final class LoadEngine: @unchecked Sendable {
    // @unchecked: `tally` and the slots are touched only by the client loop's thread (the
    // callback API) or under `sharedTally`'s lock (the async API); the driving thread reads
    // `tally` only after the run has drained, which the `inflight` counter tells it.
    let workload: Workload
    let clients: [RPCClient]
    let payload: Payload
    let verify: Bool
    private let method: RPCMethod<[UInt8], [UInt8]>

    private var tally = Tally()
    private let sharedTally = Locked(Tally())
    private let measuring = Atomic<Bool>(false)
    private let running = Atomic<Bool>(true)
    private let inflight = Atomic<Int>(0)
    /// Failed or mismatched calls outside the measured window.
    private let unmeasuredFailures = Atomic<UInt64>(0)
    /// Completions so far, for the progress line.
    let completed = Atomic<UInt64>(0)

    init(workload: Workload, clients: [RPCClient]) {
        self.workload = workload
        self.clients = clients
        self.payload = Payload(size: workload.payload)
        self.verify = workload.method == "Bench.Echo"
        self.method = RPCMethod(workload.method)
    }

    /// Runs warm-up then the measured window; returns the measurements. An interruption
    /// ends the window early (the figures cover the part that ran) or, during warm-up,
    /// leaves nothing measured.
    func run(interruption: Interruption = .never) async -> LoadResult {
        if let rate = workload.rate {
            startOpenLoop(rate: rate)
        } else {
            switch workload.api {
            case .callback: startClosedLoopCallbacks()
            case .async: startClosedLoopAsync(on: nil)
            case .asyncLoop: startClosedLoopAsync(on: clients[0].eventLoop)
            }
        }
        let progress = Progress(engine: self)
        progress.start()
        let warmedUp = await interruption.wait(seconds: workload.warmup)
        let cpu0 = processCPUMicros()
        let t0 = nowNanos()
        if warmedUp {
            measuring.store(true, ordering: .relaxed)
            _ = await interruption.wait(seconds: workload.duration)
            measuring.store(false, ordering: .relaxed)
        }
        let t1 = nowNanos()
        let cpu1 = processCPUMicros()
        running.store(false, ordering: .relaxed)
        progress.stop()
        // Let the calls in flight end (they are no longer recorded).
        let deadline = nowNanos() + 10_000_000_000
        while inflight.load(ordering: .acquiring) > 0 && nowNanos() < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        var total = tally
        total.merge(sharedTally.withLock { $0 })
        return LoadResult(workload: workload, backend: clients[0].eventLoop.backend, tally: total,
                          seconds: warmedUp ? Double(t1 - t0) / 1e9 : 0,
                          cpuMicros: cpu1 - cpu0, leftInFlight: inflight.load(ordering: .acquiring),
                          unmeasuredFailures: unmeasuredFailures.load(ordering: .relaxed),
                          interrupted: interruption.receivedSignal != nil)
    }

    private func record(_ latency: UInt64, _ result: Result<[UInt8], RPCError>, seq: UInt64, confined: Bool) {
        completed.add(1, ordering: .relaxed)
        let ok: Bool, mismatch: Bool
        switch result {
        case .success(let reply):
            ok = true
            mismatch = verify && !payload.matches(reply, seq: seq)
        case .failure:
            ok = false
            mismatch = false
        }
        guard measuring.load(ordering: .relaxed) else {
            // Every reply is verified; outside the window only failures are kept.
            if !ok || mismatch { unmeasuredFailures.add(1, ordering: .relaxed) }
            return
        }
        if confined {
            tally.record(latency: latency, ok: ok, mismatch: mismatch)
        } else {
            sharedTally.withLock { $0.record(latency: latency, ok: ok, mismatch: mismatch) }
        }
    }

    // MARK: Closed loop, callback API

    /// One call slot of the closed loop. `@unchecked Sendable`: after its first call a slot
    /// is touched only by the client loop's thread, in completions.
    private final class Slot: @unchecked Sendable {
        let engine: LoadEngine
        let client: RPCClient
        let loop: RPCEventLoop
        var seq: UInt64
        var sentAt: UInt64 = 0
        var bytes: [UInt8]
        init(engine: LoadEngine, client: RPCClient, seq: UInt64, bytes: [UInt8]) {
            self.engine = engine
            self.client = client
            self.loop = client.eventLoop
            self.seq = seq
            self.bytes = bytes
        }

        func completed(_ result: Result<[UInt8], RPCError>) {
            engine.record(loop.iterationNanoseconds &- sentAt, result, seq: seq, confined: true)
            // A failed call retires its slot: re-issuing at once could spin on a dead connection.
            if case .success = result, engine.running.load(ordering: .relaxed) {
                engine.issue(self)
            } else {
                engine.inflight.subtract(1, ordering: .releasing)
            }
        }
    }

    private func startClosedLoopCallbacks() {
        var slotNumber: UInt64 = 0
        for client in clients {
            for _ in 0..<workload.depth {
                slotNumber += 1
                // Each slot numbers its calls in its own range, so sequence numbers never repeat.
                let slot = Slot(engine: self, client: client, seq: slotNumber << 40, bytes: payload.template)
                inflight.add(1, ordering: .relaxed)
                issue(slot)
            }
        }
    }

    private func issue(_ slot: Slot) {
        slot.seq &+= 1
        payload.stamp(slot.seq, into: &slot.bytes)
        // Timestamps from the loop's iteration clock, as the C floor takes them: one clock
        // read per loop iteration instead of two per call.
        slot.sentAt = slot.loop.iterationNanoseconds
        // The completion captures only the slot, which then serves as the closure's context:
        // the load generator allocates nothing of its own per call.
        slot.client.go(method, slot.bytes) { [slot] result in slot.completed(result) }
    }

    // MARK: Closed loop, async API

    private func startClosedLoopAsync(on loop: RPCEventLoop?) {
        var slotNumber: UInt64 = 0
        for client in clients {
            for _ in 0..<workload.depth {
                slotNumber += 1
                let base = slotNumber << 40
                inflight.add(1, ordering: .relaxed)
                Task(executorPreference: loop) { [self] in
                    await asyncSlot(client: client, firstSeq: base, confined: loop != nil)
                    inflight.subtract(1, ordering: .releasing)
                }
            }
        }
    }

    /// One closed-loop slot of the async API: call, await, record, repeat. Tasks on the
    /// loop executor all run on the loop thread, so they share the confined tally; tasks
    /// on the global executor take the lock.
    private func asyncSlot(client: RPCClient, firstSeq: UInt64, confined: Bool) async {
        var bytes = payload.template
        var seq = firstSeq
        // On the loop executor the loop's iteration clock is free; elsewhere read the clock.
        let loop = client.eventLoop
        func clock() -> UInt64 { confined ? loop.iterationNanoseconds : nowNanos() }
        while running.load(ordering: .relaxed) {
            seq &+= 1
            payload.stamp(seq, into: &bytes)
            let sentAt = clock()
            let result: Result<[UInt8], RPCError>
            do throws(RPCError) { result = .success(try await client.call(method, bytes)) } catch { result = .failure(error) }
            record(clock() &- sentAt, result, seq: seq, confined: confined)
            if case .failure = result { break }
        }
    }

    // MARK: Open loop

    private func startOpenLoop(rate: Double) {
        let interval = UInt64(max(1e9 / rate, 1))
        let thread = PacingThread { [self] in
            var next = nowNanos()
            var seq: UInt64 = 0
            var turn = 0
            while running.load(ordering: .relaxed) {
                let now = nowNanos()
                if now < next {
                    if next - now > 50_000 { usleep(UInt32((next - now - 20_000) / 1000)) }
                    continue
                }
                let intended = next
                next += interval
                seq += 1
                let client = clients[turn % clients.count]
                turn += 1
                var bytes = payload.template
                payload.stamp(seq, into: &bytes)
                inflight.add(1, ordering: .relaxed)
                let callSeq = seq
                switch workload.api {
                case .callback:
                    client.go(method, bytes) { [self] result in
                        record(nowNanos() &- intended, result, seq: callSeq, confined: true)
                        inflight.subtract(1, ordering: .releasing)
                    }
                case .async, .asyncLoop:
                    Task(executorPreference: workload.api == .asyncLoop ? client.eventLoop : nil) { [self, bytes] in
                        let result: Result<[UInt8], RPCError>
                        do throws(RPCError) { result = .success(try await client.call(method, bytes)) } catch { result = .failure(error) }
                        record(nowNanos() &- intended, result, seq: callSeq, confined: workload.api == .asyncLoop)
                        inflight.subtract(1, ordering: .releasing)
                    }
                }
            }
        }
        thread.start()
    }
}

/// A plain thread for the pacing loop (it spins and sleeps; it must not occupy one of
/// Swift concurrency's cooperative threads).
final class PacingThread: @unchecked Sendable {
    // @unchecked: `body` is set once in init and only run by the new thread.
    private let body: () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            let me = Unmanaged<PacingThread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box.toOpaque())
        pthread_detach(tid)
    }
}

/// The live progress line on standard error, when it is a terminal.
final class Progress: Sendable {
    private let engine: LoadEngine
    private let stopped = Atomic<Bool>(false)

    init(engine: LoadEngine) { self.engine = engine }

    func start() {
        guard isatty(STDERR_FILENO) != 0 else { return }
        let thread = PacingThread { [self] in
            var last = engine.completed.load(ordering: .relaxed)
            var lastTime = nowNanos()
            while !stopped.load(ordering: .relaxed) {
                usleep(500_000)
                let n = engine.completed.load(ordering: .relaxed)
                let t = nowNanos()
                let rate = Double(n - last) / (Double(t - lastTime) / 1e9)
                writeStderr("\r  \(engine.workload.name) [\(engine.workload.api.rawValue)]: \(formatCount(rate)) calls/s   ")
                last = n
                lastTime = t
            }
            writeStderr("\r\u{1b}[2K")
        }
        thread.start()
    }

    func stop() { stopped.store(true, ordering: .relaxed) }
}

/// Writes to standard error unbuffered (and without touching C's shared `stderr`).
func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
