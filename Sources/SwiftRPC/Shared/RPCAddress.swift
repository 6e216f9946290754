/// A server's address as text is written everywhere a target is taken: `host:port`,
/// `[v6-address]:port`, `unix:/path/to.sock`, or `unix:@name` (Linux's abstract namespace).
///
/// ```swift
/// let address = RPCAddress("unix:/run/app.sock")!
/// let client = try await RPCClient.connect(host: address.host, port: address.port)
/// ```
public struct RPCAddress: Sendable, Hashable, CustomStringConvertible {
    /// What `RPCServer.Configuration.host` and `RPCClient` take: a name, an IPv4 or IPv6
    /// address (no brackets), or the whole `unix:` form.
    public var host: String
    /// The TCP port; 0 for a Unix socket.
    public var port: Int

    /// A TCP address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses the text forms above; nil when it is none of them (no port, a port out of
    /// range, an IPv6 address without brackets, an empty Unix path).
    public init?(_ text: String) {
        if text.hasPrefix("unix:") {
            guard text.count > 5, text != "unix:@" else { return nil }
            self.init(host: text, port: 0)
            return
        }
        guard let colon = text.lastIndex(of: ":"), colon != text.startIndex,
              let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
            host = host.dropFirst().dropLast()
        } else if host.contains(":") {
            return nil // an IPv6 address needs its brackets: "[::1]:7000"
        }
        self.init(host: String(host), port: port)
    }

    /// True for `unix:` addresses.
    public var isUnixSocket: Bool { host.hasPrefix("unix:") }

    /// The text form: `host:port`, `[v6]:port` or `unix:...`.
    public var description: String {
        if isUnixSocket { return host }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
