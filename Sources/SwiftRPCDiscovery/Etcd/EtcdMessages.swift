import Foundation

// The v3 JSON gateway's messages (etcd 3.4: grpc-gateway over etcdserverpb). Keys and
// values travel base64-encoded; 64-bit integers arrive as JSON strings (proto3 JSON) and
// are sent as strings too. Only the fields SwiftRPC reads are modelled.

/// A 64-bit integer in proto3 JSON: a string, though a plain number decodes too.
struct ProtoInt64: Codable, Sendable {
    var value: Int64

    init(_ value: Int64) { self.value = value }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let text = try? c.decode(String.self), let v = Int64(text) { value = v; return }
        value = try c.decode(Int64.self)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(String(value))
    }
}

struct EtcdHeader: Decodable, Sendable {
    var revision: ProtoInt64?
}

struct EtcdKV: Decodable, Sendable {
    var key: String
    var value: String?
    var mod_revision: ProtoInt64?
    var lease: ProtoInt64?
}

struct PutRequest: Encodable {
    var key: String
    var value: String
    var lease: ProtoInt64?
}

struct RangeRequest: Encodable {
    var key: String
    var range_end: String?
}

struct RangeResponse: Decodable {
    var header: EtcdHeader?
    var kvs: [EtcdKV]?
}

struct DeleteRangeRequest: Encodable {
    var key: String
    var range_end: String?
}

struct LeaseGrantRequest: Encodable {
    var TTL: ProtoInt64
}

struct LeaseGrantResponse: Decodable {
    var ID: ProtoInt64?
    var TTL: ProtoInt64?
    var error: String?
}

struct LeaseIDRequest: Encodable {
    var ID: ProtoInt64
}

/// /v3/lease/keepalive is a streaming RPC; over plain POST it answers one message wrapped
/// in `result`. A lease that has expired comes back without `TTL` (or with 0).
struct LeaseKeepAliveResponse: Decodable {
    struct Result: Decodable { var ID: ProtoInt64?; var TTL: ProtoInt64? }
    var result: Result?
}

struct WatchCreate: Encodable {
    struct Create: Encodable {
        var key: String
        var range_end: String?
        var start_revision: ProtoInt64?
        var progress_notify: Bool
    }
    var create_request: Create
}

/// One message of the watch stream.
struct WatchMessage: Decodable {
    struct Result: Decodable {
        struct Event: Decodable {
            /// Absent for PUT (proto3 JSON omits the zero enum value), "DELETE" otherwise.
            var type: String?
            var kv: EtcdKV
        }
        var header: EtcdHeader?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: ProtoInt64?
        var cancel_reason: String?
        var events: [Event]?
    }
    struct Failure: Decodable { var message: String?; var code: Int? }
    var result: Result?
    var error: Failure?
}

/// The gateway's error body for a non-200 answer.
struct GatewayError: Decodable {
    var error: String?
    var message: String?
    var code: Int?
}

enum Base64 {
    static func encode(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
    static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func decode(_ text: String?) -> [UInt8] {
        guard let text, let data = Data(base64Encoded: text) else { return [] }
        return [UInt8](data)
    }
}

/// The key just past every key starting with `prefix`: etcd's range_end for a prefix
/// scan (the last byte below 0xff incremented, the rest dropped).
func prefixRangeEnd(_ prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xff {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0] // every key
}
