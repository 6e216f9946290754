/// TLS settings of a server or a client: TLS 1.3 (1.2 only when allowed), AEAD ciphers,
/// ALPN `swiftrpc/1`, no renegotiation, no compression. The encryption runs in the C core,
/// so ciphertext never reaches Swift.
///
/// ```swift
/// // Mutual TLS: the server requires client certificates from its CA.
/// let server = RPCServer(configuration: .init(
///     port: 7443, tls: .server(certificateChain: .file("server.pem"), privateKey: .file("server.key"),
///                              clientAuthentication: .required, trustRoots: .file("ca.pem"))))
/// let client = try await RPCClient.connect(host: "localhost", port: 7443, configuration: .init(
///     tls: .client(trustRoots: .file("ca.pem"), certificateChain: .file("client.pem"),
///                  privateKey: .file("client.key"))))
/// ```
///
/// A value is built into an OpenSSL context once, the first time it is used, and that
/// context is shared by every connection made with the same value (reconnects, a
/// cluster's pools); changing a property makes a new one.
public struct RPCTLSConfiguration: Sendable {
    /// Where PEM text comes from.
    public enum Source: Sendable, Hashable {
        /// A PEM file, read when the configuration is first used.
        case file(String)
        /// PEM text in memory (a secret store's value, say).
        case pem(String)
    }

    /// Who must show a certificate to a server.
    public enum ClientAuthentication: Sendable, Hashable {
        /// No certificate is asked for.
        case none
        /// Asked for, and verified against ``trustRoots`` when presented.
        case optional
        /// Mutual TLS: a client without a certificate that verifies is refused.
        case required
    }

    /// Our certificate chain, leaf first (a server needs one; a client for mutual TLS).
    public var certificateChain: Source? { didSet { cache = TLSContextCache() } }
    /// The private key of the chain's leaf.
    public var privateKey: Source? { didSet { cache = TLSContextCache() } }
    /// What the peer's certificate must chain to. A client without any uses the system's
    /// trust store; a server checks client certificates against these.
    public var trustRoots: Source? { didSet { cache = TLSContextCache() } }
    /// Server: whether clients must show a certificate.
    public var clientAuthentication: ClientAuthentication { didSet { cache = TLSContextCache() } }
    /// Client: the name sent as SNI and checked against the server's certificate (a DNS or
    /// an IP subjectAltName); `nil` uses the host connected to (`localhost` over a Unix
    /// socket).
    public var serverName: String? { didSet { cache = TLSContextCache() } }
    /// Accept TLS 1.2 too (ECDHE with AES-GCM or ChaCha20-Poly1305). Off: TLS 1.3 only.
    public var allowTLS12 = false { didSet { cache = TLSContextCache() } }
    /// Server: refuse clients that offer no ALPN (default). Turn off for peers whose TLS
    /// stack cannot send `swiftrpc/1`; a client offering other protocols only is always
    /// refused.
    public var requireALPN = true { didSet { cache = TLSContextCache() } }
    /// Server: a handshake not finished by then is closed.
    public var handshakeTimeout: Duration = .seconds(10) { didSet { cache = TLSContextCache() } }
    /// Server: how many bytes a client may send before its handshake completes.
    public var maxHandshakeBytes = 64 * 1024 { didSet { cache = TLSContextCache() } }

    /// The built context, shared by the copies of this value (see the type's notes).
    var cache = TLSContextCache()

    /// Settings with every field given; ``server(certificateChain:privateKey:clientAuthentication:trustRoots:)``
    /// and ``client(trustRoots:certificateChain:privateKey:serverName:)`` read better.
    public init(certificateChain: Source? = nil, privateKey: Source? = nil, trustRoots: Source? = nil,
                clientAuthentication: ClientAuthentication = .none, serverName: String? = nil) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.trustRoots = trustRoots
        self.clientAuthentication = clientAuthentication
        self.serverName = serverName
    }

    /// A server's settings: its certificate and key, and whether (and against which roots)
    /// clients are authenticated.
    public static func server(certificateChain: Source, privateKey: Source,
                              clientAuthentication: ClientAuthentication = .none,
                              trustRoots: Source? = nil) -> RPCTLSConfiguration {
        RPCTLSConfiguration(certificateChain: certificateChain, privateKey: privateKey, trustRoots: trustRoots,
                            clientAuthentication: clientAuthentication)
    }

    /// A client's settings: the roots the server must chain to (`nil`: the system's), and
    /// a certificate for servers that require one.
    public static func client(trustRoots: Source? = nil, certificateChain: Source? = nil, privateKey: Source? = nil,
                              serverName: String? = nil) -> RPCTLSConfiguration {
        RPCTLSConfiguration(certificateChain: certificateChain, privateKey: privateKey, trustRoots: trustRoots,
                            serverName: serverName)
    }
}

/// Holds the core's contexts once built, one per side: a node may use one value for its
/// server and its clients (Core/TLSContext.swift fills it).
final class TLSContextCache: Sendable {
    let server = Locked<AnyObject?>(nil)
    let client = Locked<AnyObject?>(nil)
}
