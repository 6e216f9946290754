import ArgumentParser
import Foundation
import SwiftRPC

/// `rpcbench stats`: a server's per-method counters (`rpc.stats`), as net/rpc's
/// `/debug/rpc` table.
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print a server's per-method call and error counts (the rpc.stats built-in).",
        discussion: """
            One row per registered method: calls since the server started, errors, and the \
            errors by status code (16 unauthenticated, 8 resource exhausted, ...).

            Examples:
              rpcbench stats --target 127.0.0.1:7000
              rpcbench stats --target 127.0.0.1:7000 --json
            """
    )

    @Option(help: "Server address, HOST:PORT.")
    var target: String

    @Flag(help: "Print the rows as JSON instead of a table.")
    var json = false

    func validate() throws {
        guard Endpoint(target) != nil else { throw ValidationError("--target must be HOST:PORT") }
    }

    func run() async throws {
        let endpoint = Endpoint(target)!
        let client = try await RPCClient.connect(host: endpoint.host, port: endpoint.port)
        defer { client.close() }
        let rows = try await client.call(RPCBuiltins.stats, nil, timeout: .seconds(5))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
        } else {
            print(StatsTable.render(rows))
        }
    }
}

enum StatsTable {
    /// A fixed-width table, widest method name first column.
    static func render(_ rows: [RPCMethodStatistics]) -> String {
        let header = ["method", "calls", "errors", "errors by code"]
        let body = rows.map { row in
            [row.method, String(row.calls), String(row.errors), codes(row.errorsByCode)]
        }
        let widths = header.indices.map { i in ([header] + body).map { $0[i].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return (i == 1 || i == 2) ? pad + cell : cell + pad   // numbers right-aligned
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return ([line(header)] + body.map(line)).joined(separator: "\n")
    }

    /// `16:3 8:1`, most frequent first; `-` when none.
    private static func codes(_ byCode: [String: UInt64]) -> String {
        if byCode.isEmpty { return "-" }
        return byCode.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .map { "\($0.key):\($0.value)" }.joined(separator: " ")
    }
}
