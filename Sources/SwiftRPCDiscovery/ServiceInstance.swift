/// One server of a service, as a registry lists it: where it listens, how much of the
/// load it should take, and free-form labels.
///
/// In etcd it is stored as JSON under `<prefix><service>/<host>:<port>`:
/// `{"host":"10.0.0.7","port":7000,"weight":2,"metadata":{"zone":"a"}}`.
public struct RPCServiceInstance: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Host name or IP address to connect to.
    public var host: String
    /// TCP port.
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

    /// Parses `HOST:PORT` (the port after the last colon).
    public init?(address: String, weight: Int = 1) {
        guard let colon = address.lastIndex(of: ":"),
              let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port),
              colon != address.startIndex else { return nil }
        self.init(host: String(address[..<colon]), port: port, weight: weight)
    }

    /// `host:port`: the instance's identity within a service.
    public var address: String { "\(host):\(port)" }

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
