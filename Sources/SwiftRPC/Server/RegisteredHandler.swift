// The server's handlers: what a registration turns into (HandlerFactory), and the one
// place a request is decoded, run and its reply encoded (RegisteredHandler.run).

/// A request's params as they arrived: their raw bytes (the params array) and, for a
/// handler that decodes them, the tree the core unpacked before dispatch (so decoding never
/// calls back into the core). Valid only while the request is dispatched.
struct RequestParams {
    let bytes: UnsafeRawBufferPointer
    /// nil when the handler takes raw bytes, or when the core ran out of memory unpacking.
    private let unpacked: MessagePackTree?

    init(bytes: UnsafeRawBufferPointer, tree: MessagePackTree?) {
        self.bytes = bytes
        self.unpacked = tree
    }

    /// The params tree.
    func tree() throws -> MessagePackTree {
        guard let unpacked else { throw RPCError(.resourceExhausted, "out of memory unpacking params") }
        return unpacked
    }
}

/// Thrown when params do not decode into a handler's argument type (status 3).
struct InvalidParams: Error, CustomStringConvertible {
    let description: String
}

/// One registered method with its types erased.
// A class, not a struct: a request's lookup then hands out one reference instead of
// copying (and retaining) every field; it is immutable, so Sendable as it stands.
final class RegisteredHandler: Sendable {
    enum Body: Sendable {
        /// Runs on the loop thread without a hop: decodes, handles, encodes the reply into
        /// the writer, or returns the byte range of the params to send back as the result.
        case inline(InlineRun)
        /// Decodes on the loop thread (the tree dies with the frame); the returned job runs
        /// in a task and returns the encoded reply.
        case async(@Sendable (RequestParams) throws -> @Sendable (RPCContext) async throws -> [UInt8])
    }

    /// Decodes on the loop thread, returns the work to run in a task.
    typealias Job = @Sendable (RequestParams) throws -> @Sendable (RPCContext) async throws -> [UInt8]
    typealias InlineRun = @Sendable (RequestParams, RPCContext, MessagePackWriter) throws -> Range<Int>?

    let name: String
    let body: Body
    /// Whether the body decodes the params (typed handlers): the core then unpacks them
    /// before dispatch. Raw handlers read the bytes and skip that.
    let decodesParams: Bool
    /// Whether `body` is `.inline`.
    var isInline: Bool {
        if case .inline = body { return true }
        return false
    }
    /// The inline body's closure (a stub for an async body), stored on its own: a request
    /// calls it on the borrowed handler, where taking it out of `body` (or out of an
    /// optional) would retain and release it.
    private let inlineRun: InlineRun
    /// The same handler run as a task, for when async interceptors must run before it: an
    /// inline body's params die with the frame, so this form decodes (or copies) them first.
    let asTask: Job

    init(name: String, decodesParams: Bool, body: Body, asTask: Job? = nil) {
        self.name = name
        self.decodesParams = decodesParams
        self.body = body
        switch body {
        case .async(let job):
            self.asTask = job
            self.inlineRun = { _, _, _ in preconditionFailure("an async handler has no inline body") }
        case .inline(let run):
            self.asTask = asTask ?? { _ in throw RPCError(.internal, "no task form for \(name)") }
            self.inlineRun = run
        }
    }

    /// Runs the part of a request that happens on the loop thread: an inline body to the
    /// end (decode, handle, encode into `writer`, which must be empty), an async body up to
    /// the job its task will run (the params are decoded now: their bytes die with the frame).
    func run(_ params: RequestParams, context: RPCContext, writer: MessagePackWriter) -> HandlerOutcome {
        do {
            if isInline { return try inlineRun(params, context, writer).map(HandlerOutcome.echo) ?? .written }
            guard case .async(let prepare) = body else { preconditionFailure("isInline is false") }
            return .later(try prepare(params))
        } catch {
            return .failed(RPCError(handlerError: error))
        }
    }
}

/// What running a request on the loop thread came to.
enum HandlerOutcome {
    /// The reply is in the writer.
    case written
    /// The reply is these bytes of the params, sent back without a copy.
    case echo(Range<Int>)
    /// The call failed; send this status.
    case failed(RPCError)
    /// Run this in a task; it returns the encoded reply.
    case later(@Sendable (RPCContext) async throws -> [UInt8])
}

// MARK: - Building handlers

enum HandlerFactory {
    static func typedAsync<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) async throws -> Reply
    ) -> RegisteredHandler {
        RegisteredHandler(name: method.name, decodesParams: true, body: .async { params in
            let args = try decodeArgs(Args.self, params)
            return { context in
                let reply = try await handler(args, context)
                return try MessagePackEncoder().encode(reply)
            }
        })
    }

    static func typedInline<Args, Reply>(
        _ method: RPCMethod<Args, Reply>,
        _ handler: @escaping @Sendable (Args, RPCContext) throws -> Reply
    ) -> RegisteredHandler {
        RegisteredHandler(name: method.name, decodesParams: true, body: .inline { params, context, writer in
            let args = try decodeArgs(Args.self, params)
            let reply = try handler(args, context)
            try MessagePackEncoder().encode(reply, into: writer)
            return nil
        }, asTask: { params in
            let args = try decodeArgs(Args.self, params)
            return { context in try MessagePackEncoder().encode(try handler(args, context)) }
        })
    }

    static func rawInline(
        _ name: String,
        _ handler: @escaping @Sendable (RPCRawRequest) throws -> RPCRawReply
    ) -> RegisteredHandler {
        RegisteredHandler(name: name, decodesParams: false, body: .inline { params, context, writer in
            switch try handler(RPCRawRequest(params: params.bytes, context: context)) {
            case .echo(let range):
                guard range.lowerBound >= 0, range.upperBound <= params.bytes.count, !range.isEmpty else {
                    throw RPCError(.internal, "raw reply range \(range) is outside the params")
                }
                return range
            case .bytes(let bytes):
                bytes.withUnsafeBytes { writer.appendRaw($0) }
                return nil
            }
        }, asTask: { params in
            let copy = Array(params.bytes)
            return { context in
                let reply = try copy.withUnsafeBytes { bytes in
                    try handler(RPCRawRequest(params: bytes, context: context))
                }
                switch reply {
                case .echo(let range):
                    guard range.lowerBound >= 0, range.upperBound <= copy.count, !range.isEmpty else {
                        throw RPCError(.internal, "raw reply range \(range) is outside the params")
                    }
                    return Array(copy[range])
                case .bytes(let bytes):
                    return bytes
                }
            }
        })
    }

    static func raw(
        _ name: String,
        _ handler: @escaping @Sendable ([UInt8], RPCContext) async throws -> [UInt8]
    ) -> RegisteredHandler {
        RegisteredHandler(name: name, decodesParams: false, body: .async { params in
            let bytes = Array(params.bytes)
            return { context in try await handler(bytes, context) }
        })
    }

    private static func decodeArgs<Args: Decodable>(_ type: Args.Type, _ params: RequestParams) throws -> Args {
        do {
            return try MessagePackDecoder().decodeFirstParam(type, fromTree: params.tree())
        } catch {
            throw InvalidParams(description: "invalid params for \(Args.self): \(error)")
        }
    }
}

extension RPCError {
    /// The status a handler's error is sent with: its own for `RPCError`, 3 for params
    /// that did not decode, 2 with the error's description for anything else.
    init(handlerError error: any Error) {
        switch error {
        case let e as RPCError: self = e
        case let e as InvalidParams: self = RPCError(.invalidArgument, e.description)
        default: self = RPCError(.unknown, String(describing: error))
        }
    }
}
