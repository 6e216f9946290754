/// The elements of a server stream, as they arrive: iterate it once. Taking an element
/// grants the server credit for more, so a slow loop holds the server back instead of
/// buffering. Cancelling the iterating task, ``cancel()``, or releasing this object — as a
/// `for` loop over `try await client.serverStream(...)` does when it is left early or
/// throws — cancels the stream (the server's handler is cancelled too).
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

    /// Waits for the first element or the end, whichever comes first: nil when an element
    /// arrived (it is still the first the iteration yields) or the stream ended well, else
    /// why it failed before any element (a cluster may retry that one).
    package func failureBeforeFirstElement() async -> RPCError? {
        if await call.channel.firstArrival() { return nil }
        if case .failure(let error) = await call.end() { return error }
        return nil
    }

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
    /// for try await event in try await client.serverStream(Feed.subscribe, Topic(name: "prices")) {
    ///     print(event)
    /// }
    /// ```
    ///
    /// The client's interceptors (and its tracing span) see the open and, once the stream
    /// ends, its end.
    ///
    /// - Throws: `RPCError` when the stream cannot be opened (`.unavailable` when not
    ///   connected, or what an interceptor refused it with); the iteration throws the
    ///   stream's end status.
    public func serverStream<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>, _ args: Args, options: RPCStreamOptions = RPCStreamOptions()
    ) async throws(RPCError) -> RPCServerStreamCall<Element> {
        let params = try StreamCoding.params(args)
        guard let pipeline else { return RPCServerStreamCall(call: try open(method.name, kind: 1, params, options)) }
        // The chain runs for the stream's whole life; the sequence is handed back at its open.
        let opened = OpenedStream()
        Task {
            do {
                _ = try await pipeline.run(Self.clientCall(method.name, options, defaultTimeout)) { call in
                    let stream = try self.open(method.name, kind: 1, params, options.with(call))
                    opened.deliver(.success(stream))
                    _ = try await stream.end().get()
                    return RPCClientReply(value: (), metadata: stream.trailingMetadata ?? RPCMetadata())
                }
            } catch {
                opened.deliver(.failure(error)) // refused before the open (a later delivery is dropped)
            }
        }
        return RPCServerStreamCall(call: try await opened.value())
    }

    /// Runs a client stream: `body` writes the elements; returning from it half-closes the
    /// stream and the server's reply is returned. Throwing from `body` (or cancelling the
    /// task) cancels the stream and rethrows. The client's interceptors see it as one call.
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
        let params = try StreamCoding.params(args)
        return try await intercepted(method.name, options) { options throws(RPCError) in
            let call = try open(method.name, kind: 2, params, options)
            do {
                try await body(RPCStreamWriter(channel: call.channel, finishing: { call.halfClose() }))
            } catch {
                call.cancel()
                throw (error as? RPCError) ?? RPCError(.cancelled, "the stream was given up: \(error)")
            }
            call.halfClose()
            let bytes = try await call.end().get()
            return (try StreamCoding.decode(Reply.self, bytes ?? [0xc0]), call.trailingMetadata)
        }
    }

    /// Runs a bidirectional stream: `body` gets a writer and the server's elements and
    /// returns what the call returns. Returning half-closes the stream (as
    /// ``RPCStreamWriter/finish()`` does earlier); elements the body did not take are then
    /// discarded until the server ends it, and an error end is thrown. Throwing from `body`
    /// (or cancelling the task) cancels the stream and rethrows.
    public func bidiStream<Args, ClientElement, ServerElement, Result: Sendable>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>, _ args: Args,
        options: RPCStreamOptions = RPCStreamOptions(),
        _ body: (RPCStreamWriter<ClientElement>, RPCStreamInbound<ServerElement>) async throws -> Result
    ) async throws(RPCError) -> Result {
        let params = try StreamCoding.params(args)
        return try await intercepted(method.name, options) { options throws(RPCError) in
            let call = try open(method.name, kind: 3, params, options)
            let result: Result
            do {
                result = try await body(RPCStreamWriter(channel: call.channel, finishing: { call.halfClose() }),
                                        RPCStreamInbound(channel: call.channel, undecodable: .internal))
            } catch {
                call.cancel()
                throw (error as? RPCError) ?? RPCError(.cancelled, "the stream was given up: \(error)")
            }
            call.halfClose()
            while try await call.channel.next() != nil {} // discarded, credit granted back
            _ = try await call.end().get()
            return (result, call.trailingMetadata)
        }
    }

    /// Runs `run` (with the options the interceptors leave) behind the client's
    /// interceptors, as one call; directly when there are none.
    private func intercepted<R>(_ name: String, _ options: RPCStreamOptions,
                                _ run: (RPCStreamOptions) async throws(RPCError) -> (R, RPCMetadata?))
        async throws(RPCError) -> R {
        guard let pipeline else { return try await run(options).0 }
        let call = Self.clientCall(name, options, defaultTimeout)
        do {
            // The chain takes an escaping @Sendable closure; `run` only ever runs within this call.
            return try await withoutActuallyEscaping(run) { run in
                let box = UnsafeSendableBox(run)
                let reply = try await pipeline.run(call) { call in
                    let (value, trailing) = try await box.value(options.with(call))
                    return RPCClientReply(value: UnsafeSendableBox(value), metadata: trailing ?? RPCMetadata())
                }
                return (reply.value as! UnsafeSendableBox<R>).value
            }
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.unknown, String(describing: error))
        }
    }

    private static func clientCall(_ name: String, _ options: RPCStreamOptions, _ defaultTimeout: Duration?) -> RPCClientCall {
        RPCClientCall(method: name, metadata: options.metadata, timeout: options.timeout ?? defaultTimeout)
    }

    private func open(_ name: String, kind: Int32, _ params: [UInt8], _ options: RPCStreamOptions) throws(RPCError)
        -> ClientStreamCall {
        let call = ClientStreamCall(window: options.window ?? streamWindow, owner: handle)
        try handle.openStream(name, kind: kind, params: params, options: options, defaultTimeout: defaultTimeout,
                              window: call.channel.window, call: call)
        return call
    }
}

extension RPCStreamOptions {
    /// These options with the metadata and timeout an interceptor chain passed on.
    func with(_ call: RPCClientCall) -> RPCStreamOptions {
        RPCStreamOptions(timeout: call.timeout, metadata: call.metadata, window: window)
    }
}

/// A value carried across a `@Sendable` boundary that it never actually crosses
/// concurrently (the interceptor chain runs it within the caller's own call).
struct UnsafeSendableBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The hand-over of a server stream opened inside the interceptor chain: once.
final class OpenedStream: @unchecked Sendable {
    private let state = Locked<(result: Result<ClientStreamCall, RPCError>?, waiter: UnsafeContinuation<Void, Never>?)>((nil, nil))

    func deliver(_ result: Result<ClientStreamCall, any Error>) {
        let mapped = result.mapError { ($0 as? RPCError) ?? RPCError(.unknown, String(describing: $0)) }
        let waiter = state.withLock { s -> UnsafeContinuation<Void, Never>? in
            guard s.result == nil else { return nil }
            s.result = mapped
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func value() async throws(RPCError) -> ClientStreamCall {
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            let ready = state.withLock { s -> Bool in
                if s.result != nil { return true }
                s.waiter = c
                return false
            }
            if ready { c.resume() }
        }
        return try state.withLock { $0.result! }.get()
    }
}
