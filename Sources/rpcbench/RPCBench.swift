import ArgumentParser

/// rpcbench: SwiftRPC's load generator, benchmark suite and reference server.
@main
struct RPCBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpcbench",
        abstract: "Load generator, benchmark suite and reference server for SwiftRPC.",
        discussion: """
            With no subcommand, runs the standard suite on loopback: starts `rpcbench serve` \
            as a child process, runs W1 (ping-pong), W2 (pipelined) and W3 (bulk) against it \
            and prints one table.

            Examples:
              rpcbench                                   # the standard suite
              rpcbench serve --port 7000                 # reference services until Ctrl-C
              rpcbench load --target 127.0.0.1:7000 --conns 4 --depth 32 --payload 32
              rpcbench load --target 127.0.0.1:7000 --rate 50000 --duration 10   # open loop
              rpcbench load --target 127.0.0.1:7000 --api async --json
              rpcbench stats --target 127.0.0.1:7000     # per-method call and error counts
              rpcbench await-floor --cpu 1               # the runtime's own cost per await
            """,
        subcommands: [SuiteCommand.self, ServeCommand.self, LoadCommand.self, StatsCommand.self,
                      AwaitFloorCommand.self],
        defaultSubcommand: SuiteCommand.self
    )
}
