import ArgumentParser
import Foundation

/// `rpcbench` (no subcommand): the standard suite on loopback.
struct SuiteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suite",
        abstract: "Run W1, W2 and W3 against a child `rpcbench serve` on loopback (the default).",
        discussion: """
            The server runs as a separate process with one event loop; on machines with two or \
            more CPUs the server is pinned to CPU 0 and the client to CPU 1 (--cpu moves the \
            client).

            Examples:
              rpcbench                                   # every API and workload, 5 s each
              rpcbench suite --apis callback --duration 2 --json
            """
    )

    @Option(help: "Client APIs to measure, comma-separated: callback, async, async-loop.")
    var apis = "callback,async,async-loop"

    @Option(help: "Workloads to run, comma-separated: w1, w2, w3.")
    var workloads = "w1,w2,w3"

    @OptionGroup var options: LoadOptions

    func run() async throws {
        let chosenAPIs = try apis.split(separator: ",").map { name in
            guard let api = Workload.API(rawValue: String(name)) else { throw ValidationError("unknown API \(name)") }
            return api
        }
        let chosen = try workloads.split(separator: ",").map { name -> Workload in
            switch name {
            case "w1": return .w1
            case "w2": return .w2
            case "w3": return .w3
            default: throw ValidationError("unknown workload \(name)")
            }
        }
        let pin = ProcessInfo.processInfo.activeProcessorCount >= 2
        let server = try ChildServer.start(cpu: pin ? 0 : nil)
        defer { server.stop() }
        // Interrupted (Ctrl-C, SIGTERM): stop the child server too — it is in a process group
        // of its own, so a terminal's Ctrl-C never reaches it — then die of the same signal.
        let signals = Signals.onTermination { sig in
            server.stop()
            Signals.die(of: sig)
        }
        defer { withExtendedLifetime(signals) {} }
        let clientCPU = options.cpu >= 0 ? options.cpu : (pin ? 1 : -1)
        if !options.json {
            print("rpcbench suite: server pid \(server.pid) on \(server.endpoint.host):\(server.endpoint.port)"
                  + (pin ? ", server on CPU 0, client on CPU \(clientCPU)" : ""))
        }
        var results: [LoadResult] = []
        for var workload in chosen {
            for api in chosenAPIs {
                workload.api = api
                workload.duration = options.duration
                workload.warmup = options.warmup
                results.append(try await runWorkload(workload, endpoint: server.endpoint, cpu: clientCPU))
            }
        }
        print(options.json ? Table.json(results) : Table.render(results))
        if results.contains(where: \.failed) { throw ExitCode(1) }
    }
}

/// `rpcbench serve` as a child process. `@unchecked Sendable`: `stop` may run on a signal
/// handler's thread as well as the suite's; it only calls Process's thread-safe
/// `terminate` and `waitUntilExit`, and stopping twice is harmless.
final class ChildServer: @unchecked Sendable {
    let process: Process
    let endpoint: Endpoint
    var pid: Int32 { process.processIdentifier }

    private init(process: Process, endpoint: Endpoint) {
        self.process = process
        self.endpoint = endpoint
    }

    static func start(cpu: Int?) throws -> ChildServer {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0].contains("/")
            ? CommandLine.arguments[0] : "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["serve", "--port", "0", "--loops", "1"] + (cpu.map { ["--cpu", "\($0)"] } ?? [])
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
