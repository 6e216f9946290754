import SwiftRPC

/// The benchmark service: `Bench.Echo` returns its single argument unchanged, whatever
/// MessagePack value it is (`bin` for bytes), straight from the request's bytes.
///
/// ```swift
/// let echoed = try await client.call(Bench.echo, [1, 2, 3] as [UInt8])
/// ```
public enum Bench {
    /// Echo of a byte payload (any argument type echoes; this descriptor types it as bytes).
    public static let echo = RPCMethod<[UInt8], [UInt8]>("Bench.Echo")
    /// Sleeps the given milliseconds, then returns them; cancelling the call (or its
    /// deadline passing) interrupts the sleep.
    public static let sleep = RPCMethod<Int, Int>("Bench.Sleep")
}

/// Serves ``Bench``.
public struct BenchService: RPCService {
    public init() {}

    public func register(into methods: inout RPCMethodTable) {
        methods.addRawInline("Bench.Echo") { request in
            guard let argument = request.argument(0) else {
                throw RPCError(.invalidArgument, "Bench.Echo takes exactly one argument")
            }
            return .echo(argument)
        }
        methods.add(Bench.sleep) { milliseconds, _ in
            guard milliseconds >= 0 else { throw RPCError(.invalidArgument, "Bench.Sleep takes milliseconds >= 0") }
            try await Task.sleep(for: .milliseconds(milliseconds)) // throws when cancelled
            return milliseconds
        }
    }
}

/// Registers every reference service (`Arith.*`, `Bench.*`) on `server`.
public func registerReferenceServices(on server: RPCServer) throws(RPCError) {
    try server.register(ArithService())
    try server.register(BenchService())
}
