/// An RPC failure: a status code from wire protocol v1 (gRPC's numbering) and a message.
///
/// Errors thrown by a handler as `RPCError` reach the caller with their code and message;
/// any other error reaches it as ``Code-swift.struct/unknown`` with its description.
///
/// ```swift
/// do {
///     _ = try await client.call(Arith.divide, .init(A: 1, B: 0))
/// } catch let error as RPCError where error.code == .unknown {
///     print(error.message) // "divide by zero"
/// }
/// ```
public struct RPCError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A status code. Known codes have names; any integer a peer sends is kept as is.
    public struct Code: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        /// The integer carried on the wire.
        public var rawValue: Int
        /// Wraps a wire status code.
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// The caller cancelled the call.
        public static let cancelled = Code(rawValue: 1)
        /// The handler threw an error that is not an `RPCError`.
        public static let unknown = Code(rawValue: 2)
        /// The params did not decode into the method's argument type.
        public static let invalidArgument = Code(rawValue: 3)
        /// The call's deadline passed.
        public static let deadlineExceeded = Code(rawValue: 4)
        /// A limit was hit: too many calls in flight, a frame too large.
        public static let resourceExhausted = Code(rawValue: 8)
        /// The operation needs a state the system is not in (a server that is not running).
        public static let failedPrecondition = Code(rawValue: 9)
        /// No method of that name is registered.
        public static let unimplemented = Code(rawValue: 12)
        /// A bug or broken invariant on the other side.
        public static let `internal` = Code(rawValue: 13)
        /// The connection is gone or the server is shutting down; retrying may help.
        public static let unavailable = Code(rawValue: 14)
        /// The caller did not prove who it is.
        public static let unauthenticated = Code(rawValue: 16)

        public var description: String {
            switch self {
            case .cancelled: "cancelled"
            case .unknown: "unknown"
            case .invalidArgument: "invalid argument"
            case .deadlineExceeded: "deadline exceeded"
            case .resourceExhausted: "resource exhausted"
            case .failedPrecondition: "failed precondition"
            case .unimplemented: "unimplemented"
            case .internal: "internal"
            case .unavailable: "unavailable"
            case .unauthenticated: "unauthenticated"
            default: "status \(rawValue)"
            }
        }
    }

    /// The status code.
    public var code: Code
    /// A human-readable explanation.
    public var message: String
    /// True when the client knows the request never left this process: it failed before
    /// the core took it (not connected, closed, too large, not encodable) or the core
    /// refused it before writing it (the connection was down). Retrying such a call cannot
    /// run the method twice. False when the request may have reached the server (a reply,
    /// a lost connection, a timeout) and for errors made with ``init(_:_:)``.
    /// Not part of equality or hashing: it describes the attempt, not the failure.
    public var requestNeverSent: Bool = false

    /// Creates an error to throw from a handler or to compare against.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "RPCError(\(code.rawValue) \(code)): \(message)" }

    /// Equal when code and message are (``requestNeverSent`` is left out).
    public static func == (lhs: RPCError, rhs: RPCError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
    }

    /// Hashes code and message (as `==` compares them).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
    }

    /// This error, marked as a request that never left this process.
    func neverSent() -> RPCError {
        var copy = self
        copy.requestNeverSent = true
        return copy
    }
}
