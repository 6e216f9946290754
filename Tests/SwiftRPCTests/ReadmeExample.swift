import SwiftRPC

// The README's opening example, verbatim between the markers (ReadmeExampleTests checks
// the README still shows exactly these lines, and runs them).
func readmeExample() async throws {
// README BEGIN
struct Args: Codable, Sendable { var A: Int; var B: Int }
let multiply = RPCMethod<Args, Int>("Arith.Multiply")

let server = RPCServer()
try server.register(multiply) { args, _ in args.A * args.B }
let port = try server.start()

let client = try await RPCClient.connect(host: "127.0.0.1", port: port)
print(try await client.call(multiply, Args(A: 7, B: 6)))   // 42
// README END
}
