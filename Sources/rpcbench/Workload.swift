import SwiftRPC

/// One load run's shape.
struct Workload: Sendable {
    enum API: String, Sendable, CaseIterable {
        /// `client.go` with a completion closure (runs on the loop thread).
        case callback
        /// `await client.call` from tasks on Swift's default global executor.
        case async
        /// `await client.call` from tasks that prefer the client's event loop as executor.
        case asyncLoop = "async-loop"
    }

    var name: String
    var conns: Int
    var depth: Int
    var payload: Int
    var method: String = "Bench.Echo"
    var api: API = .callback
    var duration: Double = 5
    var warmup: Double = 1
    /// Calls per second for an open-loop run; nil for closed loop.
    var rate: Double?

    /// The largest payload a call of `method` can carry in a client's default frame size:
    /// the frame also holds the request envelope, at most 18 bytes besides the method name
    /// (array and type, a 5-byte msgid, the name's str header, the params array, a bin32 header).
    static func largestPayload(method: String) -> Int {
        RPCClient.Configuration().maxFrameSize - 18 - method.utf8.count
    }

    static let w1 = Workload(name: "W1 ping-pong", conns: 1, depth: 1, payload: 32)
    static let w2 = Workload(name: "W2 pipelined", conns: 4, depth: 32, payload: 32)
    static let w3 = Workload(name: "W3 bulk", conns: 1, depth: 4, payload: 64 * 1024)
}

/// The payload of call number `seq`: the sequence number in the first 8 bytes (so every
/// reply can be matched to its own request), then a fixed pattern.
struct Payload {
    let template: [UInt8]

    init(size: Int) {
        template = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    }

    func stamp(_ seq: UInt64, into bytes: inout [UInt8]) {
        let n = min(8, bytes.count)
        for i in 0..<n { bytes[i] = UInt8(truncatingIfNeeded: seq >> (8 * UInt64(i))) }
    }

    /// True when `reply` is exactly what call `seq` sent.
    func matches(_ reply: [UInt8], seq: UInt64) -> Bool {
        guard reply.count == template.count else { return false }
        let n = min(8, reply.count)
        for i in 0..<n where reply[i] != UInt8(truncatingIfNeeded: seq >> (8 * UInt64(i))) { return false }
        return reply.withUnsafeBytes { r in
            template.withUnsafeBytes { t in
                n == r.count || memcmp(r.baseAddress! + n, t.baseAddress! + n, r.count - n) == 0
            }
        }
    }
}

import Glibc
