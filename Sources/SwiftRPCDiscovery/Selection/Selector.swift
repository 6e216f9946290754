import Synchronization

/// Runs one ``RPCSelection`` over snapshots. Its state is atomics only; picking takes no
/// lock and allocates nothing.
final class Selector: Sendable {
    let selection: RPCSelection
    private let counter = Atomic<UInt64>(0)
    let random: SharedRandom

    init(_ selection: RPCSelection, seed: UInt64?) {
        self.selection = selection
        self.random = SharedRandom(seed: seed)
    }

    /// The index of the server for the next call, among those `usable` accepts; nil when
    /// none is.
    func pick(_ snapshot: ServerSnapshot, key: String?, usable: (Int) -> Bool) -> Int? {
        let n = snapshot.endpoints.count
        guard n > 0 else { return nil }
        switch selection {
        case .random:
            return probe(from: random.next(below: n), count: n, usable)
        case .roundRobin:
            // A skipped server's turn goes to the next ticket, not to its neighbour, so
            // the survivors share its load evenly.
            // Other callers take tickets meanwhile, so n tickets may all land on unusable
            // servers while a usable one exists: then probe.
            var index = 0
            for _ in 0..<n {
                index = Int(nextTicket() % UInt64(n))
                if usable(index) { return index }
            }
            return probe(from: index, count: n, usable)
        case .weightedRoundRobin:
            let schedule = snapshot.schedule
            let start = Int(nextTicket() % UInt64(schedule.count))
            for step in 0..<schedule.count {
                let index = schedule[(start + step) % schedule.count]
                if usable(index) { return index }
            }
            return nil
        case .consistentHash:
            guard let key else { return probe(from: random.next(below: n), count: n, usable) }
            let points = snapshot.ringOwners.count
            let start = snapshot.ringStart(stableHash(key))
            for step in 0..<points {
                let owner = snapshot.ringOwners[(start + step) % points]
                if usable(owner) { return owner }
            }
            return nil
        case .leastLoaded:
            if n == 1 { return usable(0) ? 0 : nil }
            let a = random.next(below: n)
            var b = random.next(below: n - 1)
            if b >= a { b += 1 }
            switch (usable(a), usable(b)) {
            case (true, true):
                let ea = snapshot.endpoints[a], eb = snapshot.endpoints[b]
                let (la, lb) = (ea.inFlight, eb.inFlight)
                if la != lb { return la < lb ? a : b }
                return ea.latencyNanos <= eb.latencyNanos ? a : b
            case (true, false): return a
            case (false, true): return b
            case (false, false): return probe(from: a, count: n, usable)
            }
        }
    }

    private func nextTicket() -> UInt64 { counter.wrappingAdd(1, ordering: .relaxed).oldValue }

    private func probe(from start: Int, count n: Int, _ usable: (Int) -> Bool) -> Int? {
        for step in 0..<n where usable((start + step) % n) { return (start + step) % n }
        return nil
    }
}
