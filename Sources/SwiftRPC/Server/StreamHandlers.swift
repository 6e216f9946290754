// What registering a stream method makes: a handler shaped like a call's (params in, a job
// out that runs with the stream's context and returns the encoded reply), so the server's
// pipeline — interceptors, statistics, metrics, tracing — wraps streams exactly as it wraps
// calls and sees each stream's open and end. The running stream (Core/ServerStreams.swift)
// reaches the job through the task-local `ServerStream.current`.

/// One registered stream method with its types erased.
struct StreamHandler: Sendable {
    /// The kind it serves (`rpc-stream`: 1 server, 2 client, 3 bidirectional).
    let kind: UInt8
    /// Decodes the opening arguments on the loop thread; its job runs in the stream's task
    /// and returns the encoded reply (nil, `0xc0`, for server and bidirectional streams).
    let handler: RegisteredHandler
    /// Whether the stream's task runs on its connection's loop (see `RPCServer.register`).
    let onLoop: Bool

    var name: String { handler.name }

    /// The same stream method with its handler replaced (the pipeline's wrapping).
    func mapped(_ transform: (RegisteredHandler) -> RegisteredHandler) -> StreamHandler {
        StreamHandler(kind: kind, handler: transform(handler), onLoop: onLoop)
    }

    private static let nilReply: [UInt8] = [0xc0]

    private init(kind: UInt8, handler: RegisteredHandler, onLoop: Bool) {
        self.kind = kind
        self.handler = handler
        self.onLoop = onLoop
    }

    private init(_ name: String, kind: UInt8, onLoop: Bool, prepare: @escaping RegisteredHandler.Job) {
        self.init(kind: kind, handler: RegisteredHandler(name: name, decodesParams: true, body: .async(prepare)),
                  onLoop: onLoop)
    }

    static func server<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>, onLoop: Bool,
        _ handler: @escaping @Sendable (Args, RPCStreamWriter<Element>, RPCContext) async throws -> Void
    ) -> StreamHandler {
        StreamHandler(method.name, kind: 1, onLoop: onLoop) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { context in
                try await handler(args, ServerStream.running().writer(), context)
                return nilReply
            }
        }
    }

    static func client<Args, Element, Reply>(
        _ method: RPCClientStreamMethod<Args, Element, Reply>, onLoop: Bool,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<Element>, RPCContext) async throws -> Reply
    ) -> StreamHandler {
        StreamHandler(method.name, kind: 2, onLoop: onLoop) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { context in
                let reply = try await handler(args, ServerStream.running().inbound(), context)
                return try StreamCoding.encode(reply)
            }
        }
    }

    static func bidi<Args, ClientElement, ServerElement>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>, onLoop: Bool,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<ClientElement>, RPCStreamWriter<ServerElement>,
                                        RPCContext) async throws -> Void
    ) -> StreamHandler {
        StreamHandler(method.name, kind: 3, onLoop: onLoop) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { context in
                let stream = try ServerStream.running()
                try await handler(args, stream.inbound(), stream.writer(), context)
                return nilReply
            }
        }
    }
}
