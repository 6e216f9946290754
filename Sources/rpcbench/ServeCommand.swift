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

    @Flag(help: "Fault injection for testing rpcbench itself: Bench.Echo flips one byte of every reply.")
    var corruptEcho = false

    func run() throws {
        let signals = Signals.blockTermination() // before any thread starts, so all inherit it
        let server = RPCServer(configuration: .init(
            host: host, port: port, loops: loops, firstCPU: cpu >= 0 ? cpu : nil, maxFrameSize: maxFrameSize))
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

/// SIGINT and SIGTERM, blocked in every thread and taken synchronously with sigwait.
struct Signals {
    private var set = sigset_t()

    /// Blocks SIGINT and SIGTERM in this thread and every thread it starts afterwards.
    static func blockTermination() -> Signals {
        var s = Signals()
        sigemptyset(&s.set)
        sigaddset(&s.set, SIGINT)
        sigaddset(&s.set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &s.set, nil)
        return s
    }

    /// Waits for one of them.
    func wait() {
        var set = self.set
        var sig: Int32 = 0
        sigwait(&set, &sig)
    }
}
