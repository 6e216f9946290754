import Foundation
import Glibc
import RPCExamples
import XCTest

@testable import SwiftRPC

/// TLS, mutual TLS, Unix sockets and IPv6 through the Swift API, over real connections and
/// real handshakes with certificates made for the run (scripts/make-test-certs.sh).
final class TransportTests: XCTestCase {
    static let whoAmI = RPCMethod<Int, String>("Test.WhoAmI")

    private var servers: [RPCServer] = []
    private var clients: [RPCClient] = []
    private static let certificates = Certificates()

    override func setUp() async throws { try requireEventLoop() }

    override func tearDown() async throws {
        for c in clients { c.close() }
        for s in servers { s.stop() }
    }

    private func cert(_ name: String) throws -> RPCTLSConfiguration.Source {
        .file(try Self.certificates.directory() + "/" + name)
    }

    /// A server whose Test.WhoAmI answers what it knows of the caller.
    private func serve(host: String = "127.0.0.1", tls: RPCTLSConfiguration? = nil,
                       interceptors: [any RPCServerInterceptor] = [], unixMode: Int? = nil) throws -> RPCServer {
        var configuration = RPCServer.Configuration(host: host, loops: 1, interceptors: interceptors, tls: tls)
        configuration.unixSocketMode = unixMode
        let server = RPCServer(configuration: configuration)
        try registerReferenceServices(on: server)
        try server.register(Self.whoAmI) { _, context in
            let peer = context.peer
            return [peer.transport.rawValue, peer.tls?.version ?? "-", peer.tls?.alpn ?? "-",
                    peer.certificate?.uris.first ?? "-", peer.credentials.map { "\($0.pid)" } ?? "-",
                    context.metadata[MutualTLSInterceptor.principalKey] ?? "-"].joined(separator: "|")
        }
        servers.append(server)
        try server.start()
        return server
    }

    private func connect(_ host: String, _ port: Int, tls: RPCTLSConfiguration? = nil,
                         reconnect: ReconnectBackoff? = nil) async throws -> RPCClient {
        let client = try await RPCClient.connect(
            host: host, port: port, configuration: .init(reconnect: reconnect, tls: tls))
        clients.append(client)
        return client
    }

    private func mutualServer(interceptors: [any RPCServerInterceptor] = [], host: String = "127.0.0.1") throws -> RPCServer {
        try serve(host: host, tls: .server(certificateChain: cert("server.pem"), privateKey: cert("server.key"),
                                           clientAuthentication: .required, trustRoots: cert("ca.pem")),
                  interceptors: interceptors)
    }

    private func goodClient() throws -> RPCTLSConfiguration {
        .client(trustRoots: try cert("ca.pem"), certificateChain: try cert("client.pem"), privateKey: try cert("client.key"))
    }

    // MARK: TLS

    func testMutualTLSCallsWorkAndTheHandlerSeesTheClientCertificate() async throws {
        let server = try mutualServer()
        let client = try await connect("localhost", server.port!, tls: goodClient())
        let product = try await client.call(Arith.multiply, ArithArgs(A: 6, B: 7))
        XCTAssertEqual(product, 42)
        let big = [UInt8](repeating: 0x42, count: 300_000) // a frame over many records
        let echoed = try await client.call(Bench.echo, big)
        XCTAssertEqual(echoed, big)
        let who = try await client.call(Self.whoAmI, 0)
        XCTAssertEqual(who, "tls|TLSv1.3|swiftrpc/1|spiffe://swiftrpc.test/client|-|-")
        XCTAssertEqual(server.statistics.tlsHandshakes, 1)
        XCTAssertEqual(server.statistics.rejectedHandshakes, 0)
    }

    func testAServerThatDoesNotVerifyFailsTheConnectWithTheReason() async throws {
        let server = try mutualServer()
        for (tls, expected) in [
            (RPCTLSConfiguration.client(trustRoots: try cert("other-ca.pem")), "did not verify"),
            (.client(trustRoots: try cert("ca.pem"), serverName: "wrong.example"), "hostname mismatch"),
        ] {
            do {
                _ = try await connect("127.0.0.1", server.port!, tls: tls)
                XCTFail("connected to a server it should not trust")
            } catch let error as RPCError {
                XCTAssertEqual(error.code, .unavailable)
                XCTAssertTrue(error.message.contains(expected), error.message)
            }
        }
    }

    func testAClientWithoutACertificateIsRefusedAndCountedAndDoesNotReconnect() async throws {
        let server = try mutualServer()
        // TLS 1.3: the client's handshake ends first; the refusal reaches the first call.
        let client = try await connect("localhost", server.port!, tls: .client(trustRoots: try cert("ca.pem")),
                                       reconnect: ReconnectBackoff(initial: .milliseconds(10), maximum: .milliseconds(20)))
        // Attempt 0 races the refusal (the call may be pending on the connection, in transit to
        // the loop, or refused at once); attempt 1 comes after it, and after 300 ms in which
        // a reconnecting client would have been refused again. Each way, the reason is told.
        for attempt in 0..<2 {
            do {
                _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1), timeout: .seconds(5))
                XCTFail("a client without a certificate was served")
            } catch {
                XCTAssertEqual(error.code, .unavailable, error.message)
                XCTAssertTrue(error.message.contains("certificate required"), error.message)
            }
            if attempt == 0 {
                let counted = await eventually { server.statistics.rejectedHandshakes == 1 }
                XCTAssertTrue(counted)
                // Refused for its certificate, it does not come back every 10 ms to be refused
                // again; the next call fails at once, saying why.
                try await Task.sleep(for: .milliseconds(300))
                XCTAssertEqual(server.statistics.rejectedHandshakes, 1)
                XCTAssertEqual(client.statistics.reconnects, 0)
            }
        }
        // Everyone else is still served.
        let good = try await connect("localhost", server.port!, tls: goodClient())
        let product = try await good.call(Arith.multiply, ArithArgs(A: 2, B: 3))
        XCTAssertEqual(product, 6)
    }

    func testReloadTLSServesNewHandshakesWithTheNewCertificateAndKeepsOpenConnections() async throws {
        let server = try mutualServer()
        let before = try await connect("localhost", server.port!, tls: goodClient())
        try server.reloadTLS(.server(certificateChain: cert("other-server.pem"), privateKey: cert("other-server.key"),
                                     clientAuthentication: .required, trustRoots: cert("ca.pem")))
        let trustsOther = RPCTLSConfiguration.client(
            trustRoots: try cert("other-ca.pem"), certificateChain: try cert("client.pem"), privateKey: try cert("client.key"))
        let after = try await connect("localhost", server.port!, tls: trustsOther)
        let a = try await after.call(Arith.multiply, ArithArgs(A: 3, B: 3))
        let b = try await before.call(Arith.multiply, ArithArgs(A: 4, B: 4))
        XCTAssertEqual([a, b], [9, 16])
        // A reload that cannot load keeps the current certificate.
        XCTAssertThrowsError(try server.reloadTLS(.server(certificateChain: .file("/nonexistent.pem"),
                                                           privateKey: .file("/nonexistent.key"))))
        let c = try await connect("localhost", server.port!, tls: trustsOther)
        let product = try await c.call(Arith.multiply, ArithArgs(A: 5, B: 5))
        XCTAssertEqual(product, 25)
    }

    func testMutualTLSInterceptorAdmitsByCertificateIdentityAndAnswers16Otherwise() async throws {
        let admits = try mutualServer(interceptors: [MutualTLSInterceptor(admitting: [.uri("spiffe://swiftrpc.test/client")])])
        let refuses = try mutualServer(interceptors: [MutualTLSInterceptor(admitting: [.uri("spiffe://swiftrpc.test/ops")],
                                                                            openMethods: ["Arith.Multiply"])])
        let yes = try await connect("localhost", admits.port!, tls: goodClient())
        let who = try await yes.call(Self.whoAmI, 0)
        XCTAssertTrue(who.hasSuffix("|spiffe://swiftrpc.test/client"), who)
        let no = try await connect("localhost", refuses.port!, tls: goodClient())
        do {
            _ = try await no.call(Self.whoAmI, 0)
            XCTFail("an identity that is not admitted was let through")
        } catch {
            XCTAssertEqual(error.code, .unauthenticated)
        }
        let open = try await no.call(Arith.multiply, ArithArgs(A: 2, B: 2))
        XCTAssertEqual(open, 4)
    }

    func testAReconnectThatMeetsACertificateThatDoesNotVerifyStopsAndSaysWhy() async throws {
        let first = try mutualServer()
        let port = first.port!
        let client = try await connect("localhost", port, tls: goodClient(),
                                       reconnect: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(100)))
        let product = try await client.call(Arith.multiply, ArithArgs(A: 2, B: 5))
        XCTAssertEqual(product, 10)
        first.stop()
        // The same port, now with a certificate the client does not trust.
        let second = RPCServer(configuration: .init(port: port, loops: 1, tls: .server(
            certificateChain: try cert("other-server.pem"), privateKey: try cert("other-server.key"))))
        try registerReferenceServices(on: second)
        servers.append(second)
        try second.start()
        do {
            _ = try await client.call(Arith.multiply, ArithArgs(A: 1, B: 1), timeout: .seconds(10))
            XCTFail("the call went to a server whose certificate does not verify")
        } catch {
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.message.contains("did not verify"), error.message)
        }
        let stopped = await eventually { !client.isConnected && client.statistics.reconnects == 0 }
        XCTAssertTrue(stopped)
    }

    // MARK: Unix sockets

    func testUnixSocketServesCallsTellsThePeerProcessAndRemovesItsFile() async throws {
        let path = "/tmp/swiftrpc-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let server = try serve(host: "unix:\(path)", unixMode: 0o600)
        var info = stat()
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        let client = try await connect("unix:\(path)", 0)
        let who = try await client.call(Self.whoAmI, 0)
        XCTAssertEqual(who, "unix|-|-|-|\(getpid())|-")
        // A second server on a live socket is refused with a clear error.
        XCTAssertThrowsError(try serve(host: "unix:\(path)")) { error in
            let error = error as! RPCError
            XCTAssertEqual(error.code, .unavailable)
            XCTAssertTrue(error.message.contains("in use"), error.message)
        }
        client.close()
        server.stop()
        XCTAssertNotEqual(access(path, F_OK), 0, "the socket file outlived its server")
    }

    func testAbstractUnixSocketAndTLSOverAUnixSocket() async throws {
        let name = "unix:@swiftrpc-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let server = try serve(host: name, tls: .server(certificateChain: cert("server.pem"), privateKey: cert("server.key")))
        let client = try await connect(name, 0, tls: .client(trustRoots: try cert("ca.pem")))
        let who = try await client.call(Self.whoAmI, 0)
        XCTAssertTrue(who.hasPrefix("tls|TLSv1.3|swiftrpc/1|-|\(getpid())"), who)
        XCTAssertEqual(server.statistics.tlsHandshakes, 1)
    }

    // MARK: IPv6

    func testIPv6LoopbackAndTheDualStackWildcard() async throws {
        let probe = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        var loopback = sockaddr_in6()
        loopback.sin6_family = sa_family_t(AF_INET6)
        loopback.sin6_addr = in6addr_loopback
        let hasIPv6 = withUnsafePointer(to: &loopback) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
        }
        close(probe)
        try XCTSkipUnless(hasIPv6, "no IPv6 loopback here")
        let v6 = try serve(host: "::1")
        let c6 = try await connect("::1", v6.port!)
        let viaV6 = try await c6.call(Self.whoAmI, 0)
        XCTAssertTrue(viaV6.hasPrefix("tcp|"))
        let both = try serve(host: "::")
        for host in ["127.0.0.1", "::1"] {
            let client = try await connect(host, both.port!)
            let product = try await client.call(Arith.multiply, ArithArgs(A: 7, B: 7))
            XCTAssertEqual(product, 49, host)
        }
        XCTAssertEqual(RPCAddress("[::1]:7000"), RPCAddress(host: "::1", port: 7000))
        XCTAssertEqual(RPCAddress("unix:/run/a.sock")?.description, "unix:/run/a.sock")
        XCTAssertNil(RPCAddress("::1:7000"), "an IPv6 address needs its brackets")
        XCTAssertEqual(RPCAddress(host: "::1", port: 80).description, "[::1]:80")
    }
}

/// The run's certificates, made once (scripts/make-test-certs.sh) in a temporary directory.
final class Certificates: @unchecked Sendable {
    // @unchecked: `made` is only touched under `lock`.
    private let lock = NSLock()
    private var made: String?

    func directory() throws -> String {
        try lock.withLock {
            if let made { return made }
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
            let dir = NSTemporaryDirectory() + "swiftrpc-certs-\(getpid())"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = [root.appendingPathComponent("scripts/make-test-certs.sh").path, dir]
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw RPCError(.internal, "scripts/make-test-certs.sh failed (is openssl installed?)")
            }
            made = dir
            return dir
        }
    }
}
