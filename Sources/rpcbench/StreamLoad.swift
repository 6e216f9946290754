import ArgumentParser
import Foundation
import RPCExamples
import SwiftRPC

/// The stream workloads: one stream on one connection against the reference streams.
///   W4  server stream (`Bench.Stream`): elements/s, each checked for its index;
///   W5  client stream (`Bench.Upload`): MB/s, the server's count checked at the end;
///   bidi (`Bench.EchoStream`): elements echoed per second, each checked;
///   W6  a server stream whose consumer waits `consumerDelay` per element: the resident
///       memory of both processes, sampled once a second, must stay flat.
struct StreamWorkload: Sendable {
    enum Kind: String, Sendable, CaseIterable {
        case server, client, bidi
    }

    var name: String
    var kind: Kind
    var payload: Int
    var duration: Double = 5
    var warmup: Double = 1
    /// W6: how long the consumer takes per element.
    var consumerDelay: Duration?
    /// The window the client grants (nil: the client's default).
    var window: RPCStreamWindow?

    static let w4 = StreamWorkload(name: "W4 server stream", kind: .server, payload: 32)
    static let w5 = StreamWorkload(name: "W5 client stream", kind: .client, payload: 64 * 1024)
    static let bidi = StreamWorkload(name: "bidi echo", kind: .bidi, payload: 32)
    /// W6's producer with a consumer that keeps up: what "10x slower" is measured against.
    static let w6Producer = StreamWorkload(name: "W6 producer alone", kind: .server, payload: 64 * 1024)
    static let w6 = StreamWorkload(name: "W6 slow consumer", kind: .server, payload: 64 * 1024, duration: 10,
                                   consumerDelay: .milliseconds(1))
}

/// One stream workload's measurements.
struct StreamResult: Codable, Sendable {
    var workload: String
    var kind: String
    var payload: Int
    var seconds: Double
    var elements: Int
    var elementsPerSec: Double
    var mbPerSec: Double
    var errors: Int
    var mismatches: Int
    /// Resident memory, KiB, at the start of the measured window and at its end, and the
    /// largest sample (W6; zero for the others): client, and server when its pid is known.
    var clientRSSStartKiB: Int = 0
    var clientRSSEndKiB: Int = 0
    var clientRSSPeakKiB: Int = 0
    var serverRSSStartKiB: Int = 0
    var serverRSSEndKiB: Int = 0
    var serverRSSPeakKiB: Int = 0

    enum CodingKeys: String, CodingKey {
        case workload, kind, payload, seconds, elements, errors, mismatches
        case elementsPerSec = "elements_per_sec", mbPerSec = "mb_per_sec"
        case clientRSSStartKiB = "client_rss_start_kib", clientRSSEndKiB = "client_rss_end_kib"
        case clientRSSPeakKiB = "client_rss_peak_kib", serverRSSStartKiB = "server_rss_start_kib"
        case serverRSSEndKiB = "server_rss_end_kib", serverRSSPeakKiB = "server_rss_peak_kib"
    }

    var failed: Bool { errors > 0 || mismatches > 0 }
}

/// Counts elements moved, and whether every one was the expected one.
private final class StreamTally: @unchecked Sendable {
    let state = Locked((elements: 0, mismatches: 0, measuring: false))

    func count(_ ok: Bool) {
        state.withLock { s in
            if s.measuring { s.elements += 1 }
            if !ok { s.mismatches += 1 }
        }
    }
}

/// Runs `workload` on one fresh connection; `serverPID` (when known) has its memory sampled.
func runStreamWorkload(_ workload: StreamWorkload, endpoint: Endpoint, cpu: Int, serverPID: Int32? = nil)
    async throws -> StreamResult {
    if cpu >= 0 { try RPCEventLoop.pinProcess(toCPU: cpu) }
    let loop = try RPCEventLoop(cpu: cpu >= 0 ? cpu : nil)
    let client = try await RPCClient.connect(host: endpoint.host, port: endpoint.port,
                                             configuration: .init(eventLoop: loop, tls: endpoint.tls))
    defer { client.close() }
    let tally = StreamTally()
    let size = workload.payload
    var errors = 0
    // The stream's task runs on the client's event loop (as the async-loop API's callers
    // do): its elements are taken, and written, where the core reads and writes them.
    let mover = Task(executorPreference: loop) { () throws -> Void in
        switch workload.kind {
        case .server:
            var index: UInt32 = 0
            for try await element in try await client.serverStream(Bench.stream, [Int(Int32.max), size],
                                                                   options: .init(window: workload.window)) {
                tally.count(element.count == size && (size < 4 || streamIndex(element) == index))
                index &+= 1
                if let delay = workload.consumerDelay { try await Task.sleep(for: delay) }
            }
        case .client:
            let element = [UInt8](repeating: 0x5a, count: size)
            var sent = 0
            let summary = try await client.clientStream(Bench.upload, RPCNoArguments()) { writer in
                while !Task.isCancelled {
                    try await writer.write(element)
                    sent += 1
                    tally.count(true)
                }
            }
            if summary.count != sent { tally.count(false) }
        case .bidi:
            try await client.bidiStream(Bench.echoStream, RPCNoArguments(), options: .init(window: workload.window)) { writer, inbound in
                let element = [UInt8](repeating: 0x33, count: size)
                let encoded = RPCEncodedValue(bytes: try MessagePackEncoder().encode(element))
                let reader = Task(executorPreference: loop) {
                    for try await echoed in inbound { tally.count(echoed.bytes == encoded.bytes) }
                }
                while !Task.isCancelled { try await writer.write(encoded) }
                reader.cancel()
            }
        }
    }
    try await Task.sleep(for: .milliseconds(Int64(workload.warmup * 1000)))
    let started = ContinuousClock.now
    tally.state.withLock { $0.measuring = true }
    var samples: [(client: Int, server: Int)] = [(residentKiB(nil), residentKiB(serverPID))]
    let end = started + .milliseconds(Int64(workload.duration * 1000))
    while ContinuousClock.now < end {
        try await Task.sleep(for: min(.seconds(1), end - ContinuousClock.now))
        samples.append((residentKiB(nil), residentKiB(serverPID)))
    }
    tally.state.withLock { $0.measuring = false }
    let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        + Double((ContinuousClock.now - started).components.seconds)
    mover.cancel()
    do { try await mover.value } catch let error as RPCError where error.code == .cancelled {} catch is CancellationError {} catch {
        errors += 1
        FileHandle.standardError.write("rpcbench: \(workload.name): \(error)\n".data(using: .utf8)!)
    }
    let (elements, mismatches, _) = tally.state.withLock { $0 }
    var result = StreamResult(
        workload: workload.name, kind: workload.kind.rawValue, payload: size, seconds: seconds, elements: elements,
        elementsPerSec: Double(elements) / seconds, mbPerSec: Double(elements) * Double(size) / seconds / 1e6,
        errors: errors, mismatches: mismatches)
    if workload.consumerDelay != nil {
        result.clientRSSStartKiB = samples[1 < samples.count ? 1 : 0].client
        result.clientRSSEndKiB = samples.last!.client
        result.clientRSSPeakKiB = samples.map(\.client).max()!
        result.serverRSSStartKiB = samples[1 < samples.count ? 1 : 0].server
        result.serverRSSEndKiB = samples.last!.server
        result.serverRSSPeakKiB = samples.map(\.server).max()!
    }
    return result
}

/// The index `Bench.Stream` writes into an element's first four bytes.
private func streamIndex(_ element: [UInt8]) -> UInt32 {
    UInt32(element[0]) << 24 | UInt32(element[1]) << 16 | UInt32(element[2]) << 8 | UInt32(element[3])
}

extension StreamWorkload.Kind: ExpressibleByArgument {}

/// VmRSS of `pid` (nil: this process) in KiB; 0 when unknown.
func residentKiB(_ pid: Int32?) -> Int {
    let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
    guard let status = try? String(contentsOfFile: path, encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
}

/// Head-of-line: W1 (ping-pong, 32 bytes) on a connection that also carries a W5 upload,
/// beside W1 on a connection of its own, in the same run.
func runHeadOfLine(endpoint: Endpoint, cpu: Int, duration: Double, warmup: Double) async throws -> (alone: LoadResult, beside: LoadResult) {
    var w1 = Workload.w1
    w1.duration = duration
    w1.warmup = warmup
    let alone = try await runWorkload(w1, endpoint: endpoint, cpu: cpu)
    let loop = try RPCEventLoop(cpu: cpu >= 0 ? cpu : nil)
    let client = try await RPCClient.connect(host: endpoint.host, port: endpoint.port,
                                             configuration: .init(eventLoop: loop, tls: endpoint.tls))
    defer { client.close() }
    let upload = Task(executorPreference: loop) {
        let element = [UInt8](repeating: 0x5a, count: 64 * 1024)
        _ = try? await client.clientStream(Bench.upload, RPCNoArguments()) { writer in
            while !Task.isCancelled { try await writer.write(element) }
        }
    }
    w1.name = "W1 beside W5"
    let beside = await LoadEngine(workload: w1, clients: [client]).run(interruption: .never)
    upload.cancel()
    _ = await upload.value
    return (alone, beside)
}

/// The stream rows of a table.
enum StreamTable {
    static func render(_ results: [StreamResult]) -> String {
        var lines = ["workload            kind    payload   elements/s       MB/s   errors  rss client KiB (start/end/peak)  rss server KiB"]
        for r in results {
            let rss = r.clientRSSPeakKiB > 0
                ? "\(r.clientRSSStartKiB)/\(r.clientRSSEndKiB)/\(r.clientRSSPeakKiB)".padding(toLength: 33, withPad: " ", startingAt: 0)
                  + "\(r.serverRSSStartKiB)/\(r.serverRSSEndKiB)/\(r.serverRSSPeakKiB)"
                : ""
            lines.append(r.workload.padding(toLength: 20, withPad: " ", startingAt: 0)
                + r.kind.padding(toLength: 8, withPad: " ", startingAt: 0)
                + String(r.payload).leftPad(7) + String(format: "%13.0f", r.elementsPerSec)
                + String(format: "%11.1f", r.mbPerSec) + String(r.errors + r.mismatches).leftPad(9) + "  " + rss)
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
