/// The servers a cluster client can call, as of one discovery update: immutable, built
/// off the hot path, swapped whole (``SnapshotCell``). It carries what the selection
/// strategy precomputes: the weighted round-robin schedule and the hash ring.
final class ServerSnapshot: Sendable {
    /// The servers, sorted by address.
    let endpoints: [ServerEndpoint]
    /// Weighted round-robin: a whole cycle of endpoint indices.
    let schedule: [Int]
    /// Consistent hashing: ring points, sorted, and the endpoint index owning each.
    let ringPoints: [UInt64]
    let ringOwners: [Int]

    init(endpoints: [ServerEndpoint], selection: RPCSelection) {
        let endpoints = endpoints.sorted { $0.instance.address < $1.instance.address }
        self.endpoints = endpoints
        switch selection {
        case .weightedRoundRobin:
            schedule = Self.smoothSchedule(weights: endpoints.map(\.instance.weight))
            (ringPoints, ringOwners) = ([], [])
        case .consistentHash(let virtualNodes):
            schedule = []
            var points: [(UInt64, Int)] = []
            for (index, endpoint) in endpoints.enumerated() {
                for v in 0..<max(virtualNodes, 1) {
                    points.append((stableHash("\(endpoint.instance.address)#\(v)"), index))
                }
            }
            points.sort { $0.0 < $1.0 }
            (ringPoints, ringOwners) = (points.map(\.0), points.map(\.1))
        default:
            schedule = []
            (ringPoints, ringOwners) = ([], [])
        }
    }

    /// nginx's smooth weighted round-robin, run for one cycle (the sum of the weights,
    /// after dividing them by their gcd; capped so a huge weight cannot blow up memory).
    static func smoothSchedule(weights: [Int]) -> [Int] {
        guard !weights.isEmpty else { return [] }
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let g = weights.reduce(0) { gcd($0, max($1, 1)) }
        var reduced = weights.map { max($0, 1) / max(g, 1) }
        let cap = 4096
        let total0 = reduced.reduce(0, +)
        if total0 > cap { reduced = reduced.map { max($0 * cap / total0, 1) } }
        let total = reduced.reduce(0, +)
        var current = [Int](repeating: 0, count: reduced.count)
        var out: [Int] = []
        out.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for i in reduced.indices {
                current[i] += reduced[i]
                if current[i] > current[best] { best = i }
            }
            current[best] -= total
            out.append(best)
        }
        return out
    }

    /// The index of the first ring point at or after `hash`, wrapping.
    func ringStart(_ hash: UInt64) -> Int {
        var lo = 0, hi = ringPoints.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ringPoints[mid] < hash { lo = mid + 1 } else { hi = mid }
        }
        return lo == ringPoints.count ? 0 : lo
    }
}
