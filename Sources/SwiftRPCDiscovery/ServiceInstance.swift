import SwiftRPC

/// One server of a service, as a registry lists it: where it listens, how much of the
/// load it should take, and free-form labels.
///
/// In etcd it is stored as JSON under `<prefix><service>/<host>:<port>`:
/// `{"host":"10.0.0.7","port":7000,"weight":2,"metadata":{"zone":"a"}}`.
public struct RPCServiceInstance: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Host name or IP address to connect to (no brackets for IPv6), or a whole
    /// `unix:/path` address.
    public var host: String
    /// TCP port (0 for a Unix socket).
    public var port: Int
    /// Relative share of the load for the weighted round-robin selector (at least 1).
    public var weight: Int
    /// Labels (zone, version, ...); not interpreted by SwiftRPC.
    public var metadata: [String: String]

    /// An instance at `host:port`.
    public init(host: String, port: Int, weight: Int = 1, metadata: [String: String] = [:]) {
        self.host = host
        self.port = port
        self.weight = max(weight, 1)
        self.metadata = metadata
    }

    /// Parses `HOST:PORT`, `[V6]:PORT` or `unix:/path` (see `RPCAddress`).
    public init?(address: String, weight: Int = 1) {
        guard let parsed = RPCAddress(address) else { return nil }
        self.init(host: parsed.host, port: parsed.port, weight: weight)
    }

    /// `host:port` (`[v6]:port`, `unix:/path`): the instance's identity within a service.
    public var address: String { RPCAddress(host: host, port: port).description }

    /// `host:port`.
    public var description: String { address }

    /// Decodes the registry's JSON; `weight` and `metadata` may be absent (1 and empty).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(host: try c.decode(String.self, forKey: .host), port: try c.decode(Int.self, forKey: .port),
                  weight: try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1,
                  metadata: try c.decodeIfPresent([String: String].self, forKey: .metadata) ?? [:])
    }
}
