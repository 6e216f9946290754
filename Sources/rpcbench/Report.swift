import Foundation

/// One workload's measurements, as printed in the table and in `--json`.
struct LoadResult: Codable, Sendable {
    var workload: String
    var api: String
    /// The client's I/O backend ("io_uring" or "epoll").
    var backend: String
    var conns: Int
    var depth: Int
    var payload: Int
    var rate: Double?
    var seconds: Double
    var calls: UInt64
    var callsPerSec: Double
    var mbPerSec: Double
    var p50Us: Double
    var p90Us: Double
    var p99Us: Double
    var p999Us: Double
    var maxUs: Double
    var errors: UInt64
    var mismatches: UInt64
    /// Errors and mismatches outside the measured window (warm-up, drain): not in the
    /// figures, but a run that had any fails all the same.
    var unmeasuredFailures: UInt64
    var clientCpuUsPerCall: Double
    var leftInFlight: Int
    /// A signal ended the run early: `seconds` is the part of the window that ran (0 when
    /// it came during warm-up).
    var interrupted: Bool

    enum CodingKeys: String, CodingKey {
        case workload, api, backend, conns, depth, payload, rate, seconds, calls
        case callsPerSec = "calls_per_sec", mbPerSec = "mb_per_sec"
        case p50Us = "p50_us", p90Us = "p90_us", p99Us = "p99_us", p999Us = "p999_us", maxUs = "max_us"
        case errors, mismatches
        case unmeasuredFailures = "unmeasured_failures"
        case clientCpuUsPerCall = "client_cpu_us_per_call"
        case leftInFlight = "left_in_flight"
        case interrupted
    }

    init(workload w: Workload, backend: String, tally: Tally, seconds: Double, cpuMicros: UInt64, leftInFlight: Int,
         unmeasuredFailures: UInt64 = 0, interrupted: Bool = false) {
        workload = w.name
        api = w.api.rawValue
        self.backend = backend
        conns = w.conns
        depth = w.depth
        payload = w.payload
        rate = w.rate
        self.seconds = seconds
        calls = tally.calls
        callsPerSec = seconds > 0 ? Double(tally.calls) / seconds : 0
        // Payload bytes moved both ways per second.
        mbPerSec = callsPerSec * Double(w.payload) * 2 / 1e6
        func us(_ p: Double) -> Double { Double(tally.histogram.valueAtPercentile(p)) / 1000 }
        p50Us = tally.calls > 0 ? us(50) : 0
        p90Us = tally.calls > 0 ? us(90) : 0
        p99Us = tally.calls > 0 ? us(99) : 0
        p999Us = tally.calls > 0 ? us(99.9) : 0
        maxUs = tally.calls > 0 ? Double(tally.histogram.max) / 1000 : 0
        errors = tally.errors
        mismatches = tally.mismatches
        self.unmeasuredFailures = unmeasuredFailures
        clientCpuUsPerCall = tally.calls > 0 ? Double(cpuMicros) / Double(tally.calls) : 0
        self.leftInFlight = leftInFlight
        self.interrupted = interrupted
    }

    /// Failed, mismatched or unfinished calls (in the window or outside it, or still in
    /// flight after the drain), or none at all: any of them makes the exit status non-zero.
    var failed: Bool { errors > 0 || mismatches > 0 || unmeasuredFailures > 0 || leftInFlight != 0 || calls == 0 }
}

/// Prints results as one aligned table.
enum Table {
    static func render(_ results: [LoadResult]) -> String {
        let header = ["workload", "api", "backend", "conns", "depth", "payload", "calls/s", "MB/s",
                      "p50 µs", "p90 µs", "p99 µs", "p999 µs", "max µs", "errors", "cpu µs/call"]
        let rows = results.map { r in
            [r.workload, r.api, r.backend, "\(r.conns)", "\(r.depth)", "\(r.payload)",
             formatCount(r.callsPerSec), String(format: "%.1f", r.mbPerSec),
             String(format: "%.1f", r.p50Us), String(format: "%.1f", r.p90Us), String(format: "%.1f", r.p99Us),
             String(format: "%.1f", r.p999Us), String(format: "%.1f", r.maxUs),
             "\(r.errors + r.mismatches + r.unmeasuredFailures)", String(format: "%.2f", r.clientCpuUsPerCall)]
        }
        let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i < 3 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                      : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        return ([line(header), String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1))]
                + rows.map(line)).joined(separator: "\n")
    }

    static func json(_ results: [LoadResult]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(results)) ?? Data(), as: UTF8.self)
    }
}

/// 1234567 -> "1.23M".
func formatCount(_ v: Double) -> String {
    switch v {
    case 1e6...: String(format: "%.2fM", v / 1e6)
    case 1e3...: String(format: "%.1fk", v / 1e3)
    default: String(format: "%.0f", v)
    }
}
