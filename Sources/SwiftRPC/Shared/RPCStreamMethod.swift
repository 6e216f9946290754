/// A server-streaming method: one request with opening arguments `Args`, then many
/// `Element`s from the server. Used both to register the handler and to open the stream, so
/// names and types cannot drift apart.
///
/// ```swift
/// enum Feed {
///     static let subscribe = RPCServerStreamMethod<Topic, Event>("Feed.Subscribe")
/// }
/// try server.register(Feed.subscribe) { topic, writer, context in
///     for event in events(topic) { try await writer.write(event) }
/// }
/// for try await event in try await client.serverStream(Feed.subscribe, Topic(name: "prices")) { ... }
/// ```
///
/// Opening arguments travel like a call's (`params` is `[args]`), except that `Args` that
/// encode as an array of other than one element are the params array itself: positional
/// arguments (`[count, size]` for `[Int]`), or none for ``RPCNoArguments``.
public struct RPCServerStreamMethod<Args: Codable & Sendable, Element: Codable & Sendable>: Sendable, Hashable {
    /// The wire name, `"Service.Method"`.
    public let name: String

    /// Describes the server-streaming method called `name`.
    public init(_ name: String) { self.name = name }
}

/// A client-streaming method: opening arguments `Args`, many `Element`s from the client,
/// then one `Reply` from the server. See ``RPCServerStreamMethod`` for how `Args` travel.
public struct RPCClientStreamMethod<Args: Codable & Sendable, Element: Codable & Sendable, Reply: Codable & Sendable>:
    Sendable, Hashable {
    /// The wire name, `"Service.Method"`.
    public let name: String

    /// Describes the client-streaming method called `name`.
    public init(_ name: String) { self.name = name }
}

/// A bidirectional method: opening arguments `Args`, then `Inbound` elements from the
/// client and `Outbound` elements from the server, independently. See
/// ``RPCServerStreamMethod`` for how `Args` travel.
public struct RPCBidiStreamMethod<Args: Codable & Sendable, Inbound: Codable & Sendable, Outbound: Codable & Sendable>:
    Sendable, Hashable {
    /// The wire name, `"Service.Method"`.
    public let name: String

    /// Describes the bidirectional method called `name`.
    public init(_ name: String) { self.name = name }
}

/// No arguments: a stream that takes none opens with `params` `[]`; the built-ins take
/// `nil` of it.
public struct RPCNoArguments: Codable, Sendable, Hashable {
    /// No arguments.
    public init() {}

    public init(from decoder: any Decoder) throws {
        _ = try decoder.unkeyedContainer() // an array, of any length: extra ones are ignored
    }

    public func encode(to encoder: any Encoder) throws {
        _ = encoder.unkeyedContainer()
    }
}

/// How much a stream's receiver lets its peer send before granting more: the flow-control
/// window. A slow consumer holds at most `messages` elements and `bytes` bytes plus one
/// element in memory; the receiver grants more as its consumer takes elements (once half
/// the window is taken), not as they arrive.
public struct RPCStreamWindow: Sendable, Hashable {
    /// Elements the peer may send ahead.
    public var messages: Int
    /// Bytes the peer may send ahead (the frames' bodies; one element may overshoot).
    public var bytes: Int

    /// A window of `messages` elements and `bytes` bytes (each at least 1).
    public init(messages: Int, bytes: Int) {
        self.messages = max(messages, 1)
        self.bytes = max(bytes, 1)
    }

    /// Wire protocol v1's default (what a peer that sends no `rpc-credit` gets): 16
    /// elements, 64 KiB.
    public static let standard = RPCStreamWindow(messages: 16, bytes: 65536)

    /// SwiftRPC's default, on both sides: 256 elements, 256 KiB. Measured (W4, 32-byte
    /// elements, release builds): 16 elements kept a server stream at 0.25-0.35 M
    /// elements/s, 256 reached 0.55-0.86 M; 64 KiB held 64 KiB uploads to one element
    /// in flight. What it costs: a stalled stream holds up to 256 KiB and one element.
    public static let `default` = RPCStreamWindow(messages: 256, bytes: 256 << 10)
}
