import ArgumentParser
import Foundation
import RPCExamples
import SwiftRPC

/// `rpcbench serve`: the reference services until SIGINT or SIGTERM.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the reference services (Bench.Echo, Arith.*, rpc.*) until SIGINT/SIGTERM.",
        discussion: """
            Prints "listening on HOST:PORT" on one line as soon as it accepts connections.

            Examples:
              rpcbench serve                             # 127.0.0.1, a free port
              rpcbench serve --host 0.0.0.0 --port 7000 --loops 2 --cpu 0
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port = 0

    @Option(help: "Event-loop threads; 0 means one per CPU.")
    var loops = 0

    @Option(help: "Pin loop i to CPU (cpu + i); -1 leaves threads unpinned.")
    var cpu = -1

    @Option(help: "Largest frame accepted or sent, in bytes.")
    var maxFrameSize = 4 << 20

    @Flag(inversion: .prefixedNo, help: "Keep per-method call and error counts for rpc.stats (rpcbench stats).")
    var methodStats = true

    @Flag(help: "Fault injection for testing rpcbench itself: Bench.Echo flips one byte of every reply.")
    var corruptEcho = false

    func run() throws {
        let signals = Signals.trapTermination()
        var configuration = RPCServer.Configuration(
            host: host, port: port, loops: loops, firstCPU: cpu >= 0 ? cpu : nil, maxFrameSize: maxFrameSize)
        configuration.methodStatistics = methodStats
        let server = RPCServer(configuration: configuration)
        if corruptEcho {
            try server.register(ArithService())
            try server.registerRawInline("Bench.Echo") { request in
                guard let range = request.argument(0) else { throw RPCError(.invalidArgument, "one argument") }
                var bytes = Array(request.params[range])
                bytes[bytes.count - 1] ^= 0x5a // the last payload byte (a bin's header stays valid)
                return .bytes(bytes)
            }
        } else {
            try registerReferenceServices(on: server)
        }
        let bound = try server.start()
        // Unbuffered, so a parent reading the pipe sees it at once.
        FileHandle.standardOutput.write(Data("listening on \(host):\(bound)\n".utf8))
        signals.wait()
        server.stop()
    }
}

/// SIGINT and SIGTERM, caught through Dispatch signal sources (as swift-service-lifecycle's
/// UnixSignals does): the default action is switched off first, so whichever thread the
/// kernel picks, the signal ends up here instead of killing the process.
///
/// `@unchecked Sendable`: `sources` is set once in init and only kept alive, never touched
/// again; the semaphore is thread-safe.
final class Signals: @unchecked Sendable {
    private let received = DispatchSemaphore(value: 0)
    private let sources: [any DispatchSourceSignal]

    private init(sources: [any DispatchSourceSignal]) { self.sources = sources }

    static func trapTermination() -> Signals {
        let sources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            return DispatchSource.makeSignalSource(signal: sig, queue: .global())
        }
        let signals = Signals(sources: sources)
        for source in sources {
            source.setEventHandler { [signals] in signals.received.signal() }
            source.resume()
        }
        return signals
    }

    /// Waits for one of them.
    func wait() { received.wait() }
}
