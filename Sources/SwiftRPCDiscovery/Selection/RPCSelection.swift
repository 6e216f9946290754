/// How ``RPCClusterClient`` picks the server for a call.
///
/// Every strategy picks without a lock: the server list is an immutable snapshot and the
/// per-strategy state is atomic counters. Servers whose connections are all down are
/// skipped, as are servers a retry has already tried.
public enum RPCSelection: Sendable, Hashable {
    /// Uniformly at random (seeded through ``RPCClusterClient/Configuration/seed``).
    case random
    /// Each server in turn.
    case roundRobin
    /// Each server in turn, as many times per cycle as its ``RPCServiceInstance/weight``,
    /// interleaved smoothly (nginx's smooth weighted round-robin: weights 5, 1, 1 give
    /// a a b a c a a, not a a a a a b c).
    case weightedRoundRobin
    /// A hash ring with `virtualNodes` points per server: calls with the same
    /// ``RPCCallOptions/hashKey`` go to the same server while it is up, and when a server
    /// leaves only its keys move. Calls without a key are spread at random.
    case consistentHash(virtualNodes: Int = 100)
    /// Power of two choices: two servers drawn at random, the one with fewer calls in
    /// flight wins (ties go to the lower observed latency). Steers load away from a slow
    /// or overloaded server without tracking every server on every call.
    case leastLoaded
}
