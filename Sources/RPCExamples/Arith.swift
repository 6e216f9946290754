import SwiftRPC

/// The arguments of `Arith.Multiply` and `Arith.Divide` (field names as in Go's net/rpc
/// example, so Go-style clients interoperate).
public struct ArithArgs: Codable, Sendable, Hashable {
    public var A: Int
    public var B: Int
    public init(A: Int, B: Int) {
        self.A = A
        self.B = B
    }
}

/// The reply of `Arith.Divide`.
public struct Quotient: Codable, Sendable, Hashable {
    public var Quo: Int
    public var Rem: Int
    public init(Quo: Int, Rem: Int) {
        self.Quo = Quo
        self.Rem = Rem
    }
}

/// net/rpc's classic example service.
///
/// ```swift
/// try server.register(ArithService())
/// let q = try await client.call(Arith.divide, ArithArgs(A: 7, B: 2)) // Quotient(Quo: 3, Rem: 1)
/// ```
public enum Arith {
    /// `A * B`; overflow is an error (status 3), not a crash.
    public static let multiply = RPCMethod<ArithArgs, Int>("Arith.Multiply")
    /// `A / B` and `A % B`; dividing by zero fails with status 2, "divide by zero".
    public static let divide = RPCMethod<ArithArgs, Quotient>("Arith.Divide")
}

/// Serves ``Arith``. Both methods are quick and never block, so they run inline on the
/// event loop.
public struct ArithService: RPCService {
    public init() {}

    public func register(into methods: inout RPCMethodTable) {
        methods.addInline(Arith.multiply) { args, _ in
            let (product, overflow) = args.A.multipliedReportingOverflow(by: args.B)
            if overflow { throw RPCError(.invalidArgument, "product overflows a 64-bit integer") }
            return product
        }
        methods.addInline(Arith.divide) { args, _ in
            if args.B == 0 { throw RPCError(.unknown, "divide by zero") }
            if args.A == .min && args.B == -1 { throw RPCError(.invalidArgument, "quotient overflows a 64-bit integer") }
            return Quotient(Quo: args.A / args.B, Rem: args.A % args.B)
        }
    }
}
