/// The elements of a server stream, as they arrive: iterate it once. Taking an element
/// grants the server credit for more, so a slow loop holds the server back instead of
/// buffering. Leaving the loop early, throwing out of it, cancelling its task or dropping
/// this object cancels the stream (the server's handler is cancelled too).
public final class RPCServerStreamCall<Element: Decodable & Sendable>: AsyncSequence, Sendable {
    let call: ClientStreamCall

    init(call: ClientStreamCall) { self.call = call }

    deinit { call.cancel() } // a no-op once the stream has ended

    /// The server's leading metadata, once it accepted the stream (nil before).
    public var leadingMetadata: RPCMetadata? { call.leadingMetadata }
    /// The server's trailing metadata, once the stream ended (nil before).
    public var trailingMetadata: RPCMetadata? { call.trailingMetadata }

    /// Gives the stream up now.
    public func cancel() { call.cancel() }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }

    /// Takes the elements one at a time; the end's error (its status) is thrown at the end.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: RPCServerStreamCall

        public mutating func next() async throws -> Element? {
            guard let element = try await stream.call.channel.next() else {
                // The server ended the stream: with an error, that is what the loop throws.
                if case .failure(let error) = await stream.call.end() { throw error }
                return nil
            }
            do { return try StreamCoding.decode(Element.self, element.bytes) } catch {
                stream.call.cancel()
                throw RPCError(.internal, error.message)
            }
        }
    }
}

extension RPCClient {
    /// Opens a server stream: the server sends `Element`s until it ends the stream.
    ///
    /// ```swift
    /// for try await event in try client.serverStream(Feed.subscribe, Topic(name: "prices")) {
    ///     print(event)
    /// }
    /// ```
    ///
    /// - Throws: `RPCError` when the stream cannot be opened (`.unavailable` when not
    ///   connected); the iteration throws the stream's end status.
    public func serverStream<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>, _ args: Args, options: RPCStreamOptions = RPCStreamOptions()
    ) throws(RPCError) -> RPCServerStreamCall<Element> {
        let call = try open(method.name, kind: 1, try StreamCoding.params(args), options)
        return RPCServerStreamCall(call: call)
    }

    /// Runs a client stream: `body` writes the elements; returning from it half-closes the
    /// stream and the server's reply is returned. Throwing from `body` (or cancelling the
    /// task) cancels the stream and rethrows.
    ///
    /// ```swift
    /// let summary = try await client.clientStream(Files.upload, RPCNoArguments()) { writer in
    ///     for chunk in chunks { try await writer.write(chunk) }
    /// }
    /// ```
    public func clientStream<Args, Element, Reply>(
        _ method: RPCClientStreamMethod<Args, Element, Reply>, _ args: Args, options: RPCStreamOptions = RPCStreamOptions(),
        _ body: (RPCStreamWriter<Element>) async throws -> Void
    ) async throws(RPCError) -> Reply {
        let call = try open(method.name, kind: 2, try StreamCoding.params(args), options)
        do {
            try await body(RPCStreamWriter(channel: call.channel, finishing: { call.halfClose() }))
        } catch {
            call.cancel()
            throw (error as? RPCError) ?? RPCError(.cancelled, "the stream was given up: \(error)")
        }
        call.halfClose()
        let bytes = try await call.end().get()
        return try StreamCoding.decode(Reply.self, bytes ?? [0xc0])
    }

    /// Runs a bidirectional stream: `body` gets a writer and the server's elements and
    /// returns what the call returns. Returning half-closes the stream; elements the body did
    /// not take are then discarded until the server ends it, and an error end is thrown.
    /// Throwing from `body` (or cancelling the task) cancels the stream and rethrows.
    public func bidiStream<Args, ClientElement, ServerElement, Result: Sendable>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>, _ args: Args,
        options: RPCStreamOptions = RPCStreamOptions(),
        _ body: (RPCStreamWriter<ClientElement>, RPCStreamInbound<ServerElement>) async throws -> Result
    ) async throws(RPCError) -> Result {
        let call = try open(method.name, kind: 3, try StreamCoding.params(args), options)
        let result: Result
        do {
            result = try await body(RPCStreamWriter(channel: call.channel, finishing: { call.halfClose() }),
                                    RPCStreamInbound(channel: call.channel, beforeRead: {}))
        } catch {
            call.cancel()
            throw (error as? RPCError) ?? RPCError(.cancelled, "the stream was given up: \(error)")
        }
        call.halfClose()
        while try await call.channel.next() != nil {} // discarded, credit granted back
        _ = try await call.end().get()
        return result
    }

    private func open(_ name: String, kind: Int32, _ params: [UInt8], _ options: RPCStreamOptions) throws(RPCError)
        -> ClientStreamCall {
        let call = ClientStreamCall(window: options.window ?? streamWindow)
        try handle.openStream(name, kind: kind, params: params, options: options, defaultTimeout: defaultTimeout,
                              window: call.channel.window, call: call)
        return call
    }
}
