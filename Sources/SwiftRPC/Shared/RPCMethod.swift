/// A typed method descriptor: one name bound to its argument and reply types, used both to
/// register a handler and to call it, so names and types cannot drift apart.
///
/// ```swift
/// struct Args: Codable, Sendable { var A: Int; var B: Int }
/// enum Arith {
///     static let multiply = RPCMethod<Args, Int>("Arith.Multiply")
/// }
/// server.register(Arith.multiply) { args, _ in args.A * args.B }
/// let product = try await client.call(Arith.multiply, Args(A: 7, B: 6)) // 42
/// ```
public struct RPCMethod<Args: Codable & Sendable, Reply: Codable & Sendable>: Sendable, Hashable {
    /// The wire name, `"Service.Method"`.
    public let name: String

    /// Describes the method called `name` (`"Service.Method"`).
    public init(_ name: String) { self.name = name }
}

/// The names a server will not accept for registration, with net/rpc-style messages.
enum MethodName {
    /// Checks `name` is `"Service.Method"` with both parts non-empty (split at the last
    /// dot) and outside the reserved `rpc.` namespace.
    static func validate(_ name: String) throws(RPCError) {
        guard let dot = name.lastIndex(of: ".") else {
            throw RPCError(.invalidArgument, "rpc: method name ill-formed, want \"Service.Method\": \"\(name)\"")
        }
        if name[..<dot].isEmpty {
            throw RPCError(.invalidArgument, "rpc: no service name in \"\(name)\"")
        }
        if name[name.index(after: dot)...].isEmpty {
            throw RPCError(.invalidArgument, "rpc: no method name in \"\(name)\"")
        }
        if name.hasPrefix("rpc.") {
            throw RPCError(.invalidArgument, "rpc: \"rpc.\" names are reserved for built-ins: \"\(name)\"")
        }
    }
}
