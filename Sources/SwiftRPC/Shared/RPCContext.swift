import Synchronization

/// What a handler knows about the call it is serving.
///
/// ```swift
/// server.register(Bench.echo) { payload, context in
///     if let trace = context.metadata["trace-id"] { print("serving \(trace)") }
///     return payload
/// }
/// ```
public struct RPCContext: Sendable {
    /// The method being called, `"Service.Method"`.
    public let method: String
    /// The request's metadata (the `ext` map without the reserved `rpc-` keys). A server
    /// interceptor may change it before passing the context on: the handler sees its copy.
    public var metadata: RPCMetadata
    /// How long the caller is still willing to wait, as it was when the request arrived;
    /// `nil` when the caller set no deadline.
    public let timeout: Duration?
    /// Metadata to send back with the reply (the response's `ext` map). Set it before the
    /// handler returns; it is read once, when the reply is sent.
    public let responseMetadata: RPCResponseMetadata
    /// The connection the request came in on (what per-connection limits key on).
    public let connection: RPCConnectionID
    /// Who is calling: transport, address, TLS session and client certificate, Unix
    /// credentials (one object per connection).
    public let peer: RPCPeer

    /// Creates a context; the server makes these, tests may too.
    public init(method: String, metadata: RPCMetadata = RPCMetadata(), timeout: Duration? = nil,
                responseMetadata: RPCResponseMetadata = RPCResponseMetadata(),
                connection: RPCConnectionID = RPCConnectionID(rawValue: 0), peer: RPCPeer = .unknown) {
        self.method = method
        self.metadata = metadata
        self.timeout = timeout
        self.responseMetadata = responseMetadata
        self.connection = connection
        self.peer = peer
    }
}

/// Names one server connection for as long as it is open (ids are not reused while a
/// connection lives; a closed connection's id may come back much later).
public struct RPCConnectionID: Sendable, Hashable, CustomStringConvertible {
    /// The core's connection handle: loop index, slot and generation.
    public let rawValue: UInt64

    /// Wraps a core connection handle (tests make their own).
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The index of the event loop that owns the connection.
    var loop: Int { Int(truncatingIfNeeded: rawValue >> 56) }

    public var description: String { "conn-\(String(rawValue, radix: 16))" }
}

/// The metadata a handler sends back with its reply.
///
/// ```swift
/// server.register(Arith.multiply) { args, context in
///     context.responseMetadata["served-by"] = "node-1"
///     return args.A * args.B
/// }
/// ```
public final class RPCResponseMetadata: Sendable {
    private let storage = Mutex(RPCMetadata())
    /// Set (releasing, under the lock) by the first write, so the server reads and resets
    /// a box nobody wrote, the usual case, with one atomic load instead of two lock round
    /// trips per request.
    private let written = Atomic<Bool>(false)

    /// Empty metadata.
    public init() {}

    /// The text value for `key`; setting `nil` removes it.
    public subscript(key: String) -> String? {
        get { storage.withLock { $0[key] } }
        set { update { $0[key] = newValue } }
    }

    /// Sets a binary value.
    public func set(_ key: String, bytes: [UInt8]) {
        update { $0.entries[key] = .bytes(bytes) }
    }

    /// Everything set so far.
    public var metadata: RPCMetadata {
        guard written.load(ordering: .acquiring) else { return RPCMetadata() }
        return storage.withLock { $0 }
    }

    /// Empties it (the server reuses one per loop for inline handlers).
    func reset() {
        guard written.load(ordering: .acquiring) else { return }
        storage.withLock {
            $0 = RPCMetadata()
            written.store(false, ordering: .releasing)
        }
    }

    private func update(_ change: (inout RPCMetadata) -> Void) {
        storage.withLock {
            change(&$0)
            written.store(true, ordering: .releasing)
        }
    }
}

/// A reply together with the metadata the server sent with it.
public struct RPCResponse<Reply: Sendable>: Sendable {
    /// The reply.
    public var value: Reply
    /// The response's metadata.
    public var metadata: RPCMetadata
}

/// Request or response metadata: string keys mapped to text or bytes.
///
/// Keys starting with `rpc-` are reserved for the protocol and are never delivered here.
public struct RPCMetadata: Sendable, Hashable, ExpressibleByDictionaryLiteral {
    /// One metadata value: MessagePack `str` or `bin` on the wire.
    public enum Entry: Sendable, Hashable {
        case text(String)
        case bytes([UInt8])
    }

    /// The entries; nil when there are none. Most calls carry no metadata, and an empty
    /// `RPCMetadata` made per call then costs nothing: no dictionary is built, copied or
    /// released. Never an empty dictionary, so equality and hashing need no special case.
    @usableFromInline var storage: [String: Entry]?

    /// The entries, in no particular order.
    public var entries: [String: Entry] {
        get { storage ?? [:] }
        set { storage = newValue.isEmpty ? nil : newValue }
    }

    /// Empty metadata.
    @inlinable public init() { storage = nil }

    /// Metadata from text entries.
    public init(dictionaryLiteral elements: (String, String)...) {
        entries = Dictionary(elements.map { ($0.0, Entry.text($0.1)) }, uniquingKeysWith: { _, last in last })
    }

    /// The text value for `key`, or `nil` when absent or binary.
    public subscript(key: String) -> String? {
        get {
            if case .text(let s)? = entries[key] { return s }
            return nil
        }
        set { entries[key] = newValue.map(Entry.text) }
    }

    /// True when there are no entries.
    @inlinable public var isEmpty: Bool { storage == nil }
}
