/// Who is on the other end of a server connection: the transport, the address and, over
/// TLS, the session and the client's verified certificate; over a Unix socket, the peer
/// process's credentials. Worked out once per connection; every call on the connection
/// shares it (``RPCContext/peer``).
///
/// ```swift
/// server.register(Admin.reset) { _, context in
///     guard context.peer.certificate?.uris.contains("spiffe://prod/ops") == true else {
///         throw RPCError(.unauthenticated, "ops only")
///     }
///     ...
/// }
/// ```
public final class RPCPeer: Sendable, CustomStringConvertible {
    /// How the connection reached the server.
    public enum Transport: String, Sendable, Hashable {
        /// Plaintext TCP (IPv4 or IPv6).
        case tcp
        /// TLS, over TCP or over a Unix socket (``RPCPeer/overUnixSocket`` says which).
        case tls
        /// A plaintext Unix domain socket.
        case unix
    }

    /// The TLS session of a connection.
    public struct TLSSession: Sendable, Hashable {
        /// `"TLSv1.3"`, `"TLSv1.2"`.
        public var version: String
        /// `"TLS_AES_128_GCM_SHA256"`...
        public var cipher: String
        /// The application protocol agreed (`"swiftrpc/1"`), or nil.
        public var alpn: String?
        /// The server name the client asked for (SNI), or nil.
        public var serverName: String?
    }

    /// A client certificate that was presented and verified.
    public struct Certificate: Sendable, Hashable {
        /// The subject, RFC 2253 form: `"CN=client,O=Example"`.
        public var subject: String
        /// subjectAltName DNS entries.
        public var dnsNames: [String]
        /// subjectAltName IP entries, as text.
        public var ipAddresses: [String]
        /// subjectAltName URI entries (a SPIFFE ID is one).
        public var uris: [String]
        /// The certificate, DER.
        public var der: [UInt8]
    }

    /// A Unix socket peer's process, as the kernel recorded it at connect (`SO_PEERCRED`).
    public struct Credentials: Sendable, Hashable {
        /// The peer process's user id.
        public var uid: Int
        /// Its group id.
        public var gid: Int
        /// Its process id (as of the connect).
        public var pid: Int
    }

    /// `.tls` for TLS whatever carries it; see ``overUnixSocket``.
    public let transport: Transport
    /// `"127.0.0.1:5555"`, `"[::1]:5555"`, or for a Unix socket `"unix:/path"` (the
    /// listener's: a Unix client has no name of its own).
    public let address: String
    /// True when the bytes travel over a Unix socket (plain or TLS).
    public let overUnixSocket: Bool
    /// The TLS session, over TLS.
    public let tls: TLSSession?
    /// The client's verified certificate, over TLS when it showed one.
    public let certificate: Certificate?
    /// The peer process, over a Unix socket.
    public let credentials: Credentials?

    /// A peer; the server makes these, tests may too.
    public init(transport: Transport, address: String, overUnixSocket: Bool = false, tls: TLSSession? = nil,
                certificate: Certificate? = nil, credentials: Credentials? = nil) {
        self.transport = transport
        self.address = address
        self.overUnixSocket = overUnixSocket
        self.tls = tls
        self.certificate = certificate
        self.credentials = credentials
    }

    /// What a context made outside a server (a test's) says.
    public static let unknown = RPCPeer(transport: .tcp, address: "unknown")

    /// `tcp://127.0.0.1:5555`, `tls://[::1]:7443`, `unix://unix:/run/app.sock`.
    public var description: String { "\(transport.rawValue)://\(address)" }
}
