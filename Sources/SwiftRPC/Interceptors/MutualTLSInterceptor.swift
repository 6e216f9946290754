/// Lets a call through only when the client's verified TLS certificate names an admitted
/// identity; otherwise answers status 16 (unauthenticated) without running the handler.
///
/// Identities are matched against the certificate's subjectAltName URIs (SPIFFE IDs),
/// DNS names and subject. The server must require client certificates
/// (`RPCTLSConfiguration.ClientAuthentication.required`, or `.optional` and this
/// interceptor to refuse those that show none). The handler finds the matched identity in
/// `context.metadata["auth-principal"]` (a value the client sent under that key is
/// replaced, so a handler can trust it).
///
/// ```swift
/// let server = RPCServer(configuration: .init(
///     interceptors: [MutualTLSInterceptor(admitting: [.uri("spiffe://prod/billing")])],
///     tls: .server(certificateChain: .file("server.pem"), privateKey: .file("server.key"),
///                  clientAuthentication: .required, trustRoots: .file("ca.pem"))))
/// ```
public struct MutualTLSInterceptor: RPCServerInterceptor {
    /// One admitted identity.
    public enum Identity: Sendable, Hashable {
        /// A subjectAltName URI, such as a SPIFFE ID (`spiffe://trust-domain/workload`).
        case uri(String)
        /// A subjectAltName DNS name.
        case dnsName(String)
        /// The whole subject, RFC 2253 form (`"CN=billing,O=Example"`).
        case subject(String)
    }

    /// The metadata key the matched identity is written to for the handler.
    public static let principalKey = TokenAuthInterceptor.principalKey
    private let admitted: Set<Identity>
    private let openMethods: Set<String>

    /// - Parameters:
    ///   - admitted: the identities let in; a certificate carrying any one of them is.
    ///   - openMethods: methods anyone connected may call.
    public init(admitting admitted: Set<Identity>, openMethods: Set<String> = []) {
        self.admitted = admitted
        self.openMethods = openMethods
    }

    public func intercept(_ context: RPCContext, next: RPCServerInterceptorNext) async throws -> [UInt8] {
        var context = context
        context.metadata.entries[Self.principalKey] = nil
        if openMethods.contains(context.method) { return try await next(context) }
        guard let certificate = context.peer.certificate else {
            throw RPCError(.unauthenticated, "rpc: a verified client certificate is required")
        }
        guard let identity = Self.match(certificate, admitted) else {
            throw RPCError(.unauthenticated, "rpc: the client certificate's identity is not admitted")
        }
        context.metadata[Self.principalKey] = identity
        return try await next(context)
    }

    /// The first of the certificate's identities that is admitted, as text.
    static func match(_ certificate: RPCPeer.Certificate, _ admitted: Set<Identity>) -> String? {
        certificate.uris.first { admitted.contains(.uri($0)) }
            ?? certificate.dnsNames.first { admitted.contains(.dnsName($0)) }
            ?? (admitted.contains(.subject(certificate.subject)) ? certificate.subject : nil)
    }
}
