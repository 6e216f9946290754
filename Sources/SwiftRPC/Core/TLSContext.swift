internal import CRPCCore

/// An `RPCTLSConfiguration` built into the core's `crpc_tls_context` (OpenSSL's context):
/// built once per configuration value and shared by every server and connection using it.
/// `@unchecked Sendable`: the core's context is reference counted and thread-safe (crpc.h);
/// servers and clients take their own reference, so releasing ours in `deinit` is safe.
final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer
    /// The name a client checks the server's certificate against, when one is set.
    let serverName: String?

    private init(pointer: OpaquePointer, serverName: String?) {
        self.pointer = pointer
        self.serverName = serverName
    }

    deinit { crpc_tls_context_release(pointer) }

    /// The context for `configuration` on the server (or client) side, built on first use.
    static func of(_ configuration: RPCTLSConfiguration, server: Bool) throws(RPCError) -> TLSContext {
        let slot = server ? configuration.cache.server : configuration.cache.client
        return try slot.withLock { (built: inout AnyObject?) throws(RPCError) -> TLSContext in
            if let context = built as? TLSContext { return context }
            let context = try make(configuration, server: server)
            built = context
            return context
        }
    }

    /// A context built now, whatever was built before: a reload reads the files again (a
    /// rotated certificate at the same path), and the value's cache then holds the new one.
    static func reloaded(_ configuration: RPCTLSConfiguration) throws(RPCError) -> TLSContext {
        let context = try make(configuration, server: true)
        configuration.cache.server.withLock { $0 = context }
        return context
    }

    private static func make(_ configuration: RPCTLSConfiguration, server: Bool) throws(RPCError) -> TLSContext {
        var options = crpc_tls_options()
        options.client_auth = switch configuration.clientAuthentication {
        case .none: Int32(CRPC_TLS_CLIENT_AUTH_NONE.rawValue)
        case .optional: Int32(CRPC_TLS_CLIENT_AUTH_OPTIONAL.rawValue)
        case .required: Int32(CRPC_TLS_CLIENT_AUTH_REQUIRED.rawValue)
        }
        options.allow_tls12 = configuration.allowTLS12 ? 1 : 0
        options.alpn_optional = configuration.requireALPN ? 0 : 1
        options.handshake_timeout_ms = UInt32(clamping: max(configuration.handshakeTimeout.milliseconds, 1))
        options.max_handshake_bytes = UInt32(clamping: max(configuration.maxHandshakeBytes, 1))
        // The strings live until the call returns; the core copies what it keeps.
        let strings = [configuration.certificateChain, configuration.privateKey, configuration.trustRoots]
        var context: OpaquePointer?
        let rc = withSources(strings[...]) { (pointers: [(UnsafePointer<CChar>?, Bool)]) -> Int32 in
            func set(_ index: Int, file: inout UnsafePointer<CChar>?, pem: inout UnsafePointer<CChar>?) {
                let (pointer, isPEM) = pointers[index]
                if isPEM { pem = pointer } else { file = pointer }
            }
            set(0, file: &options.cert_file, pem: &options.cert_pem)
            set(1, file: &options.key_file, pem: &options.key_pem)
            set(2, file: &options.ca_file, pem: &options.ca_pem)
            return server ? crpc_tls_server_context(&options, &context) : crpc_tls_client_context(&options, &context)
        }
        if rc < 0 {
            let why = String(cString: crpc_last_error())
            throw RPCError(.invalidArgument, "rpc: TLS configuration: \(why.isEmpty ? CoreErrors.describe(rc) : why)")
        }
        return TLSContext(pointer: context!, serverName: configuration.serverName)
    }

    /// Calls `body` with C strings for each source (nil stays nil) and whether it is PEM.
    private static func withSources<R>(_ sources: ArraySlice<RPCTLSConfiguration.Source?>,
                                       _ done: [(UnsafePointer<CChar>?, Bool)] = [],
                                       _ body: ([(UnsafePointer<CChar>?, Bool)]) -> R) -> R {
        guard let first = sources.first else { return body(done) }
        let rest = sources.dropFirst()
        switch first {
        case nil: return withSources(rest, done + [(nil, false)], body)
        case .file(let path)?: return path.withCString { withSources(rest, done + [($0, false)], body) }
        case .pem(let text)?: return text.withCString { withSources(rest, done + [($0, true)], body) }
        }
    }
}

extension RPCPeer {
    /// The Swift view of the core's description of a connection's peer.
    convenience init(_ p: crpc_peer) {
        func text(_ s: UnsafePointer<CChar>?) -> String? { s.map { String(cString: $0) } }
        func list(_ items: UnsafePointer<UnsafePointer<CChar>?>?, _ count: UInt32) -> [String] {
            (0..<Int(count)).compactMap { items?[$0].map { String(cString: $0) } }
        }
        let transport: Transport = switch Int(p.transport) {
        case Int(CRPC_TRANSPORT_TLS.rawValue): .tls
        case Int(CRPC_TRANSPORT_UNIX.rawValue): .unix
        default: .tcp
        }
        let session = text(p.tls_version).map {
            TLSSession(version: $0, cipher: text(p.tls_cipher) ?? "", alpn: text(p.alpn), serverName: text(p.sni))
        }
        let certificate = text(p.cert_subject).map {
            Certificate(subject: $0, dnsNames: list(p.cert_dns, p.cert_dns_count),
                        ipAddresses: list(p.cert_ips, p.cert_ips_count), uris: list(p.cert_uris, p.cert_uris_count),
                        der: Array(UnsafeBufferPointer(start: p.cert_der, count: Int(p.cert_der_len))))
        }
        let credentials = p.pid >= 0 ? Credentials(uid: Int(p.uid), gid: Int(p.gid), pid: Int(p.pid)) : nil
        self.init(transport: transport, address: text(p.address) ?? "unknown", overUnixSocket: p.over_unix != 0,
                  tls: session, certificate: certificate, credentials: credentials)
    }

    /// The connection's peer, made on its first request and kept in the core's per-connection
    /// slot (released by `peerReleaseTrampoline`). Loop thread.
    static func of(_ request: UnsafePointer<crpc_request>) -> RPCPeer {
        guard let peer = request.pointee.peer else { return .unknown }
        if let kept = peer.pointee.user { return Unmanaged<RPCPeer>.fromOpaque(kept).takeUnretainedValue() }
        let made = RPCPeer(peer.pointee)
        peer.pointee.user = Unmanaged.passRetained(made).toOpaque()
        return made
    }
}

/// A released connection's peer: the reference its slot held goes.
let peerReleaseTrampoline: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, kept in
    if let kept { Unmanaged<RPCPeer>.fromOpaque(kept).release() }
}
