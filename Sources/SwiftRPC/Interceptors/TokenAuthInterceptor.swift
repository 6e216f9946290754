/// Lets a call through only when its metadata carries a known token; otherwise answers
/// status 16 (unauthenticated) without running the handler.
///
/// The client sends `authorization: Bearer <token>` (or the bare token) in the request
/// metadata; the handler then finds the token's principal in
/// `context.metadata["auth-principal"]` (a value the client sent under that key is
/// replaced, so a handler can trust it).
///
/// ```swift
/// let auth = TokenAuthInterceptor(tokens: ["s3cret": "billing-service"])
/// let server = RPCServer(configuration: .init(interceptors: [auth]))
/// // client side:
/// let client = try await RPCClient.connect(host: h, port: p, configuration: .init(
///     interceptors: [MetadataInterceptor(["authorization": "Bearer s3cret"])]))
/// ```
public struct TokenAuthInterceptor: RPCServerInterceptor {
    /// The metadata key the token is read from.
    public let key: String
    /// The metadata key the principal is written to for the handler.
    public static let principalKey = "auth-principal"
    private let tokens: [String: String]
    private let openMethods: Set<String>

    /// - Parameters:
    ///   - tokens: each accepted token mapped to the principal it stands for.
    ///   - key: the metadata key holding the token (default `authorization`).
    ///   - openMethods: methods that need no token.
    public init(tokens: [String: String], key: String = "authorization", openMethods: Set<String> = []) {
        self.tokens = tokens
        self.key = key
        self.openMethods = openMethods
    }

    public func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
        var context = context
        if openMethods.contains(context.method) {
            context.metadata.entries[Self.principalKey] = nil
            return try await next(context)
        }
        guard let presented = context.metadata[key] else {
            throw RPCError(.unauthenticated, "rpc: missing \(key) token")
        }
        let token = presented.hasPrefix("Bearer ") ? String(presented.dropFirst(7)) : presented
        guard let principal = principal(for: token) else {
            throw RPCError(.unauthenticated, "rpc: invalid \(key) token")
        }
        context.metadata[Self.principalKey] = principal
        return try await next(context)
    }

    /// The principal of `token`, comparing against every known token in time that does
    /// not depend on where the first differing byte is (no timing oracle for guessing).
    private func principal(for token: String) -> String? {
        var found: String?
        for (known, principal) in tokens where Self.constantTimeEqual(known, token) {
            found = principal
        }
        return found
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        // Any length difference counts, not just its low byte: a known token followed by
        // 256 NUL bytes must not match.
        var diff: UInt8 = x.count == y.count ? 0 : 1
        for i in 0..<max(x.count, y.count) {
            diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return diff == 0
    }
}
