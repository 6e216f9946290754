import ArgumentParser
import Foundation
import SwiftRPC

/// `rpcbench` (no subcommand): the standard suite on loopback.
struct SuiteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suite",
        abstract: "Run W1, W2 and W3 against a child `rpcbench serve` on loopback (the default).",
        discussion: """
            The server runs as a separate process with one event loop; on machines with two or \
            more CPUs the server is pinned to CPU 0 and the client to CPU 1 (--cpu moves the \
            client).

            Each workload also runs over TLS 1.3 (certificates made for the run with openssl: \
            a throw-away CA and an ECDSA P-256 server certificate) and over a Unix socket, \
            with the first API of --apis, right after its plaintext TCP rows; the ratios to \
            TCP follow the table.

            Examples:
              rpcbench                                   # every API and workload, 5 s each
              rpcbench suite --apis callback --duration 2 --json
              rpcbench suite --transports tcp            # plaintext TCP only
            """
    )

    @Option(help: "Client APIs to measure, comma-separated: callback, async, async-loop.")
    var apis = "callback,async,async-loop"

    @Option(help: "Workloads to run, comma-separated: w1, w2, w3, and the streams (plaintext TCP, first API): w4 (server stream), w5 (client stream), bidi, w6 (slow consumer, 10 s), hol (W1 beside a W5 upload).")
    var workloads = "w1,w2,w3,w4,w5,bidi,w6,hol"

    @Option(help: "Transports, comma-separated: tcp, tls, unix (tls and unix with the first API only).")
    var transports = "tcp,tls,unix"

    @OptionGroup var options: LoadOptions

    func run() async throws {
        let chosenAPIs = try apis.split(separator: ",").map { name in
            guard let api = Workload.API(rawValue: String(name)) else { throw ValidationError("unknown API \(name)") }
            return api
        }
        let streamNames: [String: StreamWorkload] = ["w4": .w4, "w5": .w5, "bidi": .bidi, "w6": .w6]
        var chosen: [Workload] = []
        var chosenStreams: [StreamWorkload] = []
        var headOfLine = false
        for name in workloads.split(separator: ",").map(String.init) {
            switch name {
            case "w1": chosen.append(.w1)
            case "w2": chosen.append(.w2)
            case "w3": chosen.append(.w3)
            case "hol": headOfLine = true
            default:
                guard let stream = streamNames[name] else { throw ValidationError("unknown workload \(name)") }
                if name == "w6" { chosenStreams.append(.w6Producer) }
                chosenStreams.append(stream)
            }
        }
        let chosenTransports = try transports.split(separator: ",").map { name in
            guard let transport = SuiteTransport(rawValue: String(name)) else {
                throw ValidationError("unknown transport \(name)")
            }
            return transport
        }
        let pin = ProcessInfo.processInfo.activeProcessorCount >= 2
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rpcbench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var servers: [SuiteTransport: ChildServer] = [:]
        defer { servers.values.forEach { $0.stop() } }
        for transport in chosenTransports {
            servers[transport] = try transport.startServer(cpu: pin ? 0 : nil, scratch: scratch)
        }
        // Interrupted (Ctrl-C, SIGTERM): stop the child servers too — they are in process
        // groups of their own, so a terminal's Ctrl-C never reaches them — then die of the
        // same signal.
        let running = Array(servers.values)
        let signals = Signals.onTermination { sig in
            running.forEach { $0.stop() }
            Signals.die(of: sig)
        }
        defer { withExtendedLifetime(signals) {} }
        let clientCPU = options.cpu >= 0 ? options.cpu : (pin ? 1 : -1)
        if !options.json {
            for transport in chosenTransports {
                let server = servers[transport]!
                print("rpcbench suite: \(transport.rawValue) server pid \(server.pid) on \(server.endpoint.address)"
                      + (pin ? ", server on CPU 0, client on CPU \(clientCPU)" : ""))
            }
        }
        var results: [LoadResult] = []
        var rows: [(SuiteTransport, String, LoadResult)] = []
        for var workload in chosen {
            // The transports of one workload run back to back, so their ratios compare rounds
            // measured minutes apart at most.
            for transport in chosenTransports {
                for api in transport == .tcp ? chosenAPIs : Array(chosenAPIs.prefix(1)) {
                    workload.api = api
                    workload.duration = options.duration
                    workload.warmup = options.warmup
                    var result = try await runWorkload(workload, endpoint: servers[transport]!.endpoint, cpu: clientCPU)
                    let name = result.workload
                    if transport != .tcp { result.workload += " [\(transport.rawValue)]" }
                    results.append(result)
                    rows.append((transport, name, result))
                }
            }
        }
        // Streams: plaintext TCP, against the same server as the calls.
        var streamResults: [StreamResult] = []
        let tcp = servers[.tcp] ?? servers.values.first!
        for var stream in chosenStreams {
            if stream.consumerDelay == nil { stream.duration = options.duration }
            stream.warmup = options.warmup
            streamResults.append(try await runStreamWorkload(stream, endpoint: tcp.endpoint, cpu: clientCPU,
                                                             serverPID: tcp.pid))
        }
        var hol: (alone: LoadResult, beside: LoadResult)?
        if headOfLine {
            hol = try await runHeadOfLine(endpoint: tcp.endpoint, cpu: clientCPU, duration: options.duration,
                                          warmup: options.warmup)
            results += [hol!.alone, hol!.beside]
        }
        if options.json {
            print("{\"results\": \(Table.json(results)),\n\"streams\": \(jsonArray(streamResults))}")
        } else {
            print(Table.render(results))
            print(SuiteTransport.ratios(rows, api: chosenAPIs[0].rawValue))
            if !streamResults.isEmpty {
                print()
                print(StreamTable.render(streamResults))
            }
            print(Self.streamRatios(streamResults, rows: rows, hol: hol))
        }
        if results.contains(where: \.failed) || streamResults.contains(where: \.failed) { throw ExitCode(1) }
    }

    /// The streams' figures against the calls' of the same run: W4 elements/s to W2 calls/s,
    /// W5 MB/s to W3 MB/s (one way each: a call's payload travels both ways), W1 p99 beside
    /// an upload to W1 p99 alone.
    static func streamRatios(_ streams: [StreamResult], rows: [(SuiteTransport, String, LoadResult)],
                             hol: (alone: LoadResult, beside: LoadResult)?) -> String {
        func call(_ prefix: String) -> LoadResult? {
            rows.first { $0.0 == .tcp && $0.2.workload.hasPrefix(prefix) }?.2
        }
        var lines: [String] = []
        if let w4 = streams.first(where: { $0.workload.hasPrefix("W4") }), let w2 = call("W2"), w2.callsPerSec > 0 {
            lines.append(String(format: "W4 elements/s / W2 calls/s (%@): %.2fx", w2.api, w4.elementsPerSec / w2.callsPerSec))
        }
        if let w5 = streams.first(where: { $0.workload.hasPrefix("W5") }), let w3 = call("W3"), w3.mbPerSec > 0 {
            lines.append(String(format: "W5 MB/s / W3 MB/s one way (%@): %.2fx", w3.api, w5.mbPerSec / (w3.mbPerSec / 2)))
        }
        if let w6 = streams.first(where: { $0.workload.hasPrefix("W6 slow") }) {
            if let alone = streams.first(where: { $0.workload.hasPrefix("W6 producer") }), w6.elementsPerSec > 0 {
                lines.append(String(format: "W6 consumer %.1fx slower than the producer alone", alone.elementsPerSec / w6.elementsPerSec))
            }
            lines.append("W6 resident memory growth over the window: client \(w6.clientRSSEndKiB - w6.clientRSSStartKiB) KiB, "
                         + "server \(w6.serverRSSEndKiB - w6.serverRSSStartKiB) KiB")
        }
        if let hol, hol.alone.p99Us > 0 {
            lines.append(String(format: "W1 p99 beside a W5 upload / alone: %.1f us / %.1f us = %.2fx",
                                hol.beside.p99Us, hol.alone.p99Us, hol.beside.p99Us / hol.alone.p99Us))
        }
        return lines.joined(separator: "\n")
    }
}

/// How the suite reaches its server: plaintext TCP, TLS 1.3 over TCP, or a Unix socket.
enum SuiteTransport: String, CaseIterable {
    case tcp, tls, unix

    /// A child server for this transport (TLS: with certificates made in `scratch`).
    func startServer(cpu: Int?, scratch: String) throws -> ChildServer {
        switch self {
        case .tcp:
            return try ChildServer.start(cpu: cpu)
        case .unix:
            return try ChildServer.start(cpu: cpu, extra: ["--unix", scratch + "/bench.sock"])
        case .tls:
            let certs = try BenchCertificates.make(in: scratch)
            let server = try ChildServer.start(cpu: cpu, extra: ["--tls-cert", certs.chain, "--tls-key", certs.key])
            server.endpoint.tls = .client(trustRoots: .file(certs.ca), serverName: "localhost")
            return server
        }
    }

    /// Each transport against TCP, same workload, same API: W1's p50 latency and every
    /// workload's calls/s.
    static func ratios(_ rows: [(SuiteTransport, String, LoadResult)], api: String) -> String {
        var lines: [String] = []
        for transport in [SuiteTransport.tls, .unix] {
            var parts: [String] = []
            for (t, name, result) in rows where t == transport {
                guard let base = rows.first(where: { $0.0 == .tcp && $0.1 == name && $0.2.api == result.api })?.2,
                      base.callsPerSec > 0, base.p50Us > 0 else { continue }
                let short = name.split(separator: " ").first.map(String.init) ?? name
                parts.append(String(format: "%@ calls/s %.2fx, p50 %.2fx", short, result.callsPerSec / base.callsPerSec,
                                    result.p50Us / base.p50Us))
            }
            if !parts.isEmpty { lines.append("\(transport.rawValue) / tcp (\(api)): " + parts.joined(separator: "; ")) }
        }
        return lines.joined(separator: "\n")
    }
}

/// Throw-away TLS certificates for a benchmark run, made with the openssl command: a CA and
/// an ECDSA P-256 server certificate for localhost and 127.0.0.1, valid for a day.
struct BenchCertificates {
    var ca: String
    var chain: String
    var key: String

    static func make(in dir: String) throws -> BenchCertificates {
        let c = BenchCertificates(ca: dir + "/ca.pem", chain: dir + "/server.pem", key: dir + "/server.key")
        let ext = dir + "/server.ext"
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: ext, atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + ec + ["-keyout", dir + "/ca.key", "-out", c.ca, "-subj", "/CN=rpcbench CA", "-days", "1"])
        try openssl(["req"] + ec + ["-keyout", c.key, "-out", dir + "/server.csr", "-subj", "/CN=localhost"])
        try openssl(["x509", "-req", "-in", dir + "/server.csr", "-CA", c.ca, "-CAkey", dir + "/ca.key",
                     "-CAcreateserial", "-out", c.chain, "-days", "1", "-extfile", ext])
        return c
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            throw ValidationError("openssl \(arguments.first ?? "") failed: the TLS rows need the openssl command")
        }
    }
}

/// `rpcbench serve` as a child process. `@unchecked Sendable`: `stop` may run on a signal
/// handler's thread as well as the suite's; it only calls Process's thread-safe
/// `terminate` and `waitUntilExit`, and stopping twice is harmless.
final class ChildServer: @unchecked Sendable {
    let process: Process
    var endpoint: Endpoint
    var pid: Int32 { process.processIdentifier }

    private init(process: Process, endpoint: Endpoint) {
        self.process = process
        self.endpoint = endpoint
    }

    static func start(cpu: Int?, extra: [String] = []) throws -> ChildServer {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0].contains("/")
            ? CommandLine.arguments[0] : "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["serve", "--port", "0", "--loops", "1"] + (cpu.map { ["--cpu", "\($0)"] } ?? []) + extra
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // The first line is "listening on HOST:PORT"; more lines (the I/O backend) may arrive
        // in the same read, so only the text before the first newline counts.
        var output = Data()
        while !output.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            output.append(chunk)
        }
        let firstLine = output.split(separator: UInt8(ascii: "\n"), maxSplits: 1).first ?? Data()
        let text = String(decoding: firstLine, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("listening on "), let endpoint = Endpoint(String(text.dropFirst(13))) else {
            process.terminate()
            throw ValidationError("the server did not start: \(text.isEmpty ? "no output" : text)")
        }
        return ChildServer(process: process, endpoint: endpoint)
    }

    func stop() {
        if process.isRunning {
            process.terminate() // SIGTERM: a clean shutdown
            process.waitUntilExit()
        }
    }
}
