/// Writes the elements of a stream: ``write(_:metadata:)`` suspends while the peer's
/// credit is used up, so a fast writer is paced by its reader and never buffers without
/// limit. Valid while its stream runs: a write after the stream ended throws why it ended.
public struct RPCStreamWriter<Element: Encodable & Sendable>: Sendable {
    let channel: StreamChannel
    /// Runs before each write (a server accepts the stream lazily, with its leading metadata).
    let beforeWrite: @Sendable () -> Void
    /// What ``finish()`` does (a client half-closes; a server's stream ends with its handler).
    let finishing: @Sendable () -> Void

    init(channel: StreamChannel, beforeWrite: @escaping @Sendable () -> Void = {},
         finishing: @escaping @Sendable () -> Void = {}) {
        self.channel = channel
        self.beforeWrite = beforeWrite
        self.finishing = finishing
    }

    /// Whether an element has gone either way on this writer's stream.
    package var hasFlowed: Bool { channel.flowed }

    /// Client: sends no more elements (half-closes the stream) while the server's elements
    /// still arrive; writes afterwards throw. Leaving the stream's closure does it too.
    /// Server: nothing; the stream ends when the handler returns.
    public func finish() { finishing() }

    /// Sends one element (with per-element `metadata`), waiting for credit if need be.
    ///
    /// - Throws: `RPCError`: why the stream ended (`.cancelled` when the peer cancelled or
    ///   the task was cancelled, the end's status otherwise), `.resourceExhausted` for an
    ///   element larger than the frame limit, `.internal` when `Element` does not encode.
    public func write(_ element: Element, metadata: RPCMetadata = RPCMetadata()) async throws(RPCError) {
        beforeWrite()
        try await channel.send(try StreamCoding.encode(element), metadata: metadata)
    }
}

/// The elements a stream's peer sends, in order, as they arrive. Taking an element grants
/// the peer credit for more; one that nobody takes holds the peer back (within its window).
/// Iterate it once.
public struct RPCStreamInbound<Element: Decodable & Sendable>: AsyncSequence, Sendable {
    let channel: StreamChannel
    let beforeRead: @Sendable () -> Void
    /// What an element that does not decode fails the stream with: the sender's fault.
    let undecodable: RPCError.Code

    init(channel: StreamChannel, beforeRead: @escaping @Sendable () -> Void = {}, undecodable: RPCError.Code) {
        self.channel = channel
        self.beforeRead = beforeRead
        self.undecodable = undecodable
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbound: self) }

    /// Takes the elements one at a time.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbound: RPCStreamInbound

        /// The next element; nil once the peer has finished sending.
        ///
        /// - Throws: `RPCError`: why the stream failed, `.cancelled` when the task is
        ///   cancelled, `.internal` (client) or `.invalidArgument` (server) when an element
        ///   does not decode as `Element`.
        public mutating func next() async throws -> Element? {
            inbound.beforeRead()
            guard let element = try await inbound.channel.next() else { return nil }
            do { return try StreamCoding.decode(Element.self, element.bytes) } catch {
                throw RPCError(inbound.undecodable, error.message)
            }
        }
    }
}

/// One MessagePack value, already encoded: a stream element passed through as it is (an
/// echo, a proxy), with no decoding. Use it as a stream's element type only.
public struct RPCEncodedValue: Codable, Sendable, Hashable {
    /// Exactly one MessagePack value.
    public let bytes: [UInt8]

    /// Wraps `bytes`, which must be exactly one MessagePack value (the core checks).
    public init(bytes: [UInt8]) { self.bytes = bytes }

    public init(from decoder: any Decoder) throws {
        throw DecodingError.typeMismatch(Self.self, .init(codingPath: decoder.codingPath,
            debugDescription: "RPCEncodedValue is a stream element type only, not a field"))
    }

    public func encode(to encoder: any Encoder) throws {
        throw EncodingError.invalidValue(self, .init(codingPath: encoder.codingPath,
            debugDescription: "RPCEncodedValue is a stream element type only, not a field"))
    }
}

/// Per-stream settings for opening one.
public struct RPCStreamOptions: Sendable {
    /// Bounds the whole stream (sent as `rpc-timeout-us`); nil: the client's default timeout.
    public var timeout: Duration?
    /// Metadata sent with the open.
    public var metadata: RPCMetadata
    /// What the server may send ahead; nil: the client's ``RPCClient/Configuration/streamWindow``.
    public var window: RPCStreamWindow?

    /// Options with a timeout, metadata and a window.
    public init(timeout: Duration? = nil, metadata: RPCMetadata = RPCMetadata(), window: RPCStreamWindow? = nil) {
        self.timeout = timeout
        self.metadata = metadata
        self.window = window
    }
}

/// How elements and opening arguments are encoded and decoded.
enum StreamCoding {
    static func encode<T: Encodable>(_ value: T) throws(RPCError) -> [UInt8] {
        if let raw = value as? RPCEncodedValue { return raw.bytes }
        do { return try MessagePackEncoder().encode(value) } catch {
            throw RPCError(.internal, "the stream element does not encode: \(error)")
        }
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(RPCError) -> T {
        if T.self == RPCEncodedValue.self { return RPCEncodedValue(bytes: bytes) as! T }
        do {
            // A scalar element (bytes, a string, a number) is read from its header: no tree.
            var scalar: T?
            if try bytes.withUnsafeBytes({ raw in
                try MessagePackDecoder().decodeScalar(type, fromBytes: raw, into: { scalar = $0 })
            }), let scalar { return scalar }
            return try MessagePackDecoder().decode(type, from: bytes)
        } catch {
            throw RPCError(.invalidArgument, "the stream element does not decode as \(T.self): \(error)")
        }
    }

    /// The params array for opening arguments: `[args]`, or `args` itself when it encodes as
    /// an array of other than one element (positional arguments, or none).
    static func params<Args: Encodable>(_ args: Args) throws(RPCError) -> [UInt8] {
        let value: [UInt8]
        do { value = try MessagePackEncoder().encode(args) } catch {
            throw RPCError(.internal, "the stream's arguments do not encode: \(error)")
        }
        if let count = arrayCount(value), count != 1 { return value }
        return [0x91] + value
    }

    /// Decodes opening arguments from a request's params, the inverse of ``params(_:)``.
    static func arguments<Args: Decodable>(_ type: Args.Type, params: RequestParams) throws -> Args {
        do {
            if arrayCount(params.bytes) == 1 {
                return try MessagePackDecoder().decodeFirstParam(type, fromTree: params.tree())
            }
            return try MessagePackDecoder().decode(type, fromTree: params.tree())
        } catch let error as RPCError {
            throw error
        } catch {
            throw InvalidParams(description: "invalid params for \(Args.self): \(error)")
        }
    }

    /// The element count of a MessagePack array's header, or nil when `bytes` is no array.
    static func arrayCount<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> Int? where Bytes.Index == Int {
        guard let first = bytes.first else { return nil }
        switch first {
        case 0x90...0x9f: return Int(first & 0x0f)
        case 0xdc where bytes.count >= 3:
            let b = bytes.startIndex
            return Int(bytes[b + 1]) << 8 | Int(bytes[b + 2])
        case 0xdd where bytes.count >= 5:
            let b = bytes.startIndex
            return Int(bytes[b + 1]) << 24 | Int(bytes[b + 2]) << 16 | Int(bytes[b + 3]) << 8 | Int(bytes[b + 4])
        default: return nil
        }
    }
}
