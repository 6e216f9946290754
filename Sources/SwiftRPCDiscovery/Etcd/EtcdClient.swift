import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A small client for etcd's v3 JSON gateway (etcd 3.4+: `POST /v3/kv/put`,
/// `/v3/kv/range`, `/v3/kv/deleterange`, `/v3/lease/grant|keepalive|revoke`, and the
/// streaming `/v3/watch`), over AsyncHTTPClient. Just what service registration and
/// discovery need; keys and values are bytes (UTF-8 strings here), base64 on the wire.
///
/// ```swift
/// let etcd = EtcdClient(endpoint: "http://127.0.0.1:2379")
/// let lease = try await etcd.grantLease(ttl: 5)
/// try await etcd.put("swiftrpc/services/Bench/10.0.0.7:7000", value: "{...}", lease: lease)
/// try await etcd.shutdown()
/// ```
public final class EtcdClient: Sendable {
    /// The base URL, e.g. `http://127.0.0.1:2379`.
    public let endpoint: String
    private let http: HTTPClient
    /// Time limit of each unary request (watches have none).
    private let requestTimeout: TimeAmount

    /// A client of the etcd member at `endpoint` (`http://HOST:PORT`). It owns an HTTP
    /// connection pool: call ``shutdown()`` when done.
    public init(endpoint: String, requestTimeout: Duration = .seconds(5)) {
        var config = HTTPClient.Configuration()
        // Each watch holds a connection for as long as it runs.
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        config.timeout = .init(connect: .seconds(5))
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        self.requestTimeout = .nanoseconds(Int64(requestTimeout.components.seconds) * 1_000_000_000
                                           + requestTimeout.components.attoseconds / 1_000_000_000)
    }

    /// Closes the HTTP connections; the client cannot be used afterwards.
    public func shutdown() async throws { try await http.shutdown() }

    // MARK: KV

    /// Stores `value` under `key`, attached to `lease` when given (it vanishes with it).
    public func put(_ key: String, value: String, lease: Int64? = nil) async throws {
        let _: IgnoredBody = try await post("/v3/kv/put", PutRequest(
            key: Base64.encode(key), value: Base64.encode(value), lease: lease.map(ProtoInt64.init)))
    }

    /// Every key starting with `prefix`, with its value, and the store's revision as of
    /// the read (a watch from `revision + 1` misses nothing).
    public func range(prefix: String) async throws -> (revision: Int64, pairs: [(key: String, value: String)]) {
        let p = Array(prefix.utf8)
        let answer: RangeResponse = try await post("/v3/kv/range", RangeRequest(
            key: Base64.encode(p), range_end: Base64.encode(prefixRangeEnd(p))))
        let pairs = (answer.kvs ?? []).map {
            (key: String(decoding: Base64.decode($0.key), as: UTF8.self),
             value: String(decoding: Base64.decode($0.value), as: UTF8.self))
        }
        return (answer.header?.revision?.value ?? 0, pairs)
    }

    /// Deletes `key` (no error when absent).
    public func delete(_ key: String) async throws {
        let _: IgnoredBody = try await post("/v3/kv/deleterange", DeleteRangeRequest(key: Base64.encode(key)))
    }

    // MARK: Leases

    /// Grants a lease of `ttl` seconds; returns its id.
    public func grantLease(ttl: Int) async throws -> Int64 {
        let answer: LeaseGrantResponse = try await post("/v3/lease/grant", LeaseGrantRequest(TTL: ProtoInt64(Int64(ttl))))
        guard let id = answer.ID?.value, id != 0 else {
            throw EtcdError(status: 200, message: "lease grant refused: \(answer.error ?? "no id")")
        }
        return id
    }

    /// Renews `lease` once; returns its new TTL in seconds, 0 when it has already expired
    /// (keys under it are gone: grant a new one and put them again).
    public func keepAlive(lease: Int64) async throws -> Int {
        let answer: LeaseKeepAliveResponse = try await post("/v3/lease/keepalive", LeaseIDRequest(ID: ProtoInt64(lease)))
        return Int(answer.result?.TTL?.value ?? 0)
    }

    /// Revokes `lease`: every key attached to it is deleted at once.
    public func revoke(lease: Int64) async throws {
        let _: IgnoredBody = try await post("/v3/lease/revoke", LeaseIDRequest(ID: ProtoInt64(lease)))
    }

    // MARK: Watch

    /// Watches every key starting with `prefix`, from `revision` (inclusive). Each element
    /// is the batch of changes of one watch message. The stream throws ``EtcdError`` with
    /// `compacted: true` when `revision` has been compacted away (re-read and watch again),
    /// and ends when the consuming task is cancelled.
    public func watch(prefix: String, fromRevision revision: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error> {
        let p = Array(prefix.utf8)
        let create = WatchCreate(create_request: .init(
            key: Base64.encode(p), range_end: Base64.encode(prefixRangeEnd(p)),
            start_revision: ProtoInt64(revision), progress_notify: true))
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [EtcdEvent].self)
        let task = Task { [http, endpoint] in
            do {
                var request = HTTPClientRequest(url: endpoint + "/v3/watch")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(try JSONEncoder().encode(create))
                let response = try await http.execute(request, deadline: .distantFuture)
                guard response.status == .ok else {
                    let body = try await response.body.collect(upTo: 1 << 20)
                    throw EtcdError(status: Int(response.status.code), message: String(buffer: body))
                }
                var splitter = JSONObjectSplitter()
                for try await chunk in response.body {
                    for object in splitter.feed(chunk.readableBytesView) {
                        let message = try JSONDecoder().decode(WatchMessage.self, from: Data(object))
                        if let error = message.error {
                            throw EtcdError(status: 200, message: error.message ?? "watch failed")
                        }
                        guard let result = message.result else { continue }
                        if let compacted = result.compact_revision?.value, compacted != 0 {
                            throw EtcdError(status: 200, message: "revision \(revision) compacted (now \(compacted))", compacted: true)
                        }
                        if result.canceled == true {
                            throw EtcdError(status: 200, message: "watch cancelled: \(result.cancel_reason ?? "")")
                        }
                        let events = (result.events ?? []).map { e in
                            EtcdEvent(kind: e.type == "DELETE" ? .delete : .put,
                                      key: String(decoding: Base64.decode(e.kv.key), as: UTF8.self),
                                      value: String(decoding: Base64.decode(e.kv.value), as: UTF8.self),
                                      revision: e.kv.mod_revision?.value ?? 0)
                        }
                        if !events.isEmpty { continuation.yield(events) }
                    }
                }
                continuation.finish(throwing: EtcdError(status: 200, message: "watch stream ended"))
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: Transport

    private struct IgnoredBody: Decodable {}

    private func post<Body: Encodable, Answer: Decodable>(_ path: String, _ body: Body) async throws -> Answer {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(try JSONEncoder().encode(body))
        let response = try await http.execute(request, timeout: requestTimeout)
        let bytes = try await response.body.collect(upTo: 16 << 20)
        guard response.status == .ok else {
            let text = String(buffer: bytes)
            let parsed = try? JSONDecoder().decode(GatewayError.self, from: Data(text.utf8))
            throw EtcdError(status: Int(response.status.code), message: parsed?.message ?? parsed?.error ?? text)
        }
        return try JSONDecoder().decode(Answer.self, from: Data(bytes.readableBytesView))
    }
}

/// One change seen by a watch.
public struct EtcdEvent: Sendable, Hashable {
    /// Put (created or updated) or delete (including a lease's expiry).
    public enum Kind: Sendable, Hashable { case put, delete }
    /// What happened.
    public var kind: Kind
    /// The key.
    public var key: String
    /// The new value (empty for a delete).
    public var value: String
    /// The revision of the change.
    public var revision: Int64
}

/// A failure reported by etcd or its gateway.
public struct EtcdError: Error, Sendable, CustomStringConvertible {
    /// The HTTP status (200 for errors carried inside a streamed answer).
    public var status: Int
    /// etcd's message.
    public var message: String
    /// True when a watch's start revision has been compacted away.
    public var compacted: Bool = false

    /// `etcd: MESSAGE (HTTP STATUS)`.
    public var description: String { "etcd: \(message) (HTTP \(status))" }
}
