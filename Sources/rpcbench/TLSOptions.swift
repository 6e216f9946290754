import ArgumentParser
import Dispatch
import Glibc
import SwiftRPC

/// `load`'s TLS options: TLS to the server, with its roots and, for mutual TLS, a client
/// certificate.
struct ClientTLSOptions: ParsableArguments {
    @Flag(help: "Connect with TLS 1.3 (trusting --tls-ca, else the system's roots).")
    var tls = false

    @Option(help: "With --tls: PEM file of the roots the server's certificate must chain to.")
    var tlsCa: String?

    @Option(help: "With --tls: PEM file of a client certificate chain, for mutual TLS (with --tls-key).")
    var tlsCert: String?

    @Option(help: "With --tls: PEM file of the client certificate's private key.")
    var tlsKey: String?

    @Option(help: "With --tls: the name to ask for (SNI) and to check the certificate against (default: the host).")
    var tlsServerName: String?

    func validate() throws {
        if !tls && (tlsCa != nil || tlsCert != nil || tlsKey != nil || tlsServerName != nil) {
            throw ValidationError("--tls-ca, --tls-cert, --tls-key and --tls-server-name go with --tls")
        }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
    }

    /// The client's TLS settings, or nil for plaintext.
    var configuration: RPCTLSConfiguration? {
        guard tls else { return nil }
        return .client(trustRoots: tlsCa.map { .file($0) }, certificateChain: tlsCert.map { .file($0) },
                       privateKey: tlsKey.map { .file($0) }, serverName: tlsServerName)
    }
}

/// `serve`'s TLS options: the server's certificate and key, and client authentication.
struct ServerTLSOptions: ParsableArguments {
    @Option(help: "Serve TLS 1.3 with this PEM certificate chain (with --tls-key). SIGHUP reloads both files.")
    var tlsCert: String?

    @Option(help: "PEM file of --tls-cert's private key.")
    var tlsKey: String?

    @Option(help: "PEM file of the roots client certificates must chain to: clients must show one (mutual TLS).")
    var tlsClientCa: String?

    @Flag(help: "With --tls-client-ca: admit clients without a certificate too (those with one are verified).")
    var tlsClientOptional = false

    @Flag(help: "Accept TLS 1.2 too.")
    var tlsAllow12 = false

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsCert == nil && (tlsClientCa != nil || tlsClientOptional || tlsAllow12) {
            throw ValidationError("--tls-client-ca, --tls-client-optional and --tls-allow12 need --tls-cert")
        }
        if tlsClientOptional && tlsClientCa == nil { throw ValidationError("--tls-client-optional needs --tls-client-ca") }
    }

    /// The server's TLS settings, or nil for plaintext. Files are read when it is used, so
    /// a new value made after the files changed loads the new ones.
    var configuration: RPCTLSConfiguration? {
        guard let tlsCert, let tlsKey else { return nil }
        var tls = RPCTLSConfiguration.server(
            certificateChain: .file(tlsCert), privateKey: .file(tlsKey),
            clientAuthentication: tlsClientCa == nil ? .none : tlsClientOptional ? .optional : .required,
            trustRoots: tlsClientCa.map { .file($0) })
        tls.allowTLS12 = tlsAllow12
        return tls
    }
}

/// SIGHUP reloads a server's TLS files (what `serve --tls-cert` sets up): certificate
/// rotation without a restart. Keep the result alive while serving.
func reloadTLSOnHangUp(_ server: RPCServer, _ options: ServerTLSOptions) -> (any DispatchSourceSignal)? {
    guard options.configuration != nil else { return nil }
    signal(SIGHUP, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    source.setEventHandler {
        do {
            try server.reloadTLS(options.configuration!)
            writeStderr("TLS: certificate reloaded (SIGHUP)\n")
        } catch {
            writeStderr("TLS: reload failed, keeping the current certificate: \(error)\n")
        }
    }
    source.resume()
    return source
}
