// What registering a stream method makes: its handler with the types erased (the running
// stream and the core's events are Core/ServerStreams.swift's).

/// One registered stream method with its types erased.
final class StreamHandler: Sendable {
    /// Runs in the stream's task with its opening arguments decoded; returns the encoded
    /// reply of a client stream (nil: none).
    typealias Job = @Sendable (ServerStream) async throws -> [UInt8]?

    let name: String
    /// The kind it serves (`rpc-stream`: 1 server, 2 client, 3 bidirectional).
    let kind: UInt8
    /// Decodes the opening arguments on the loop thread (their bytes die with the frame).
    let prepare: @Sendable (RequestParams) throws -> Job

    init(name: String, kind: UInt8, prepare: @escaping @Sendable (RequestParams) throws -> Job) {
        self.name = name
        self.kind = kind
        self.prepare = prepare
    }

    static func server<Args, Element>(
        _ method: RPCServerStreamMethod<Args, Element>,
        _ handler: @escaping @Sendable (Args, RPCStreamWriter<Element>, RPCContext) async throws -> Void
    ) -> StreamHandler {
        StreamHandler(name: method.name, kind: 1) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { stream in
                try await handler(args, stream.writer(), stream.context)
                return nil
            }
        }
    }

    static func client<Args, Element, Reply>(
        _ method: RPCClientStreamMethod<Args, Element, Reply>,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<Element>, RPCContext) async throws -> Reply
    ) -> StreamHandler {
        StreamHandler(name: method.name, kind: 2) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { stream in
                let reply = try await handler(args, stream.inbound(), stream.context)
                return try StreamCoding.encode(reply)
            }
        }
    }

    static func bidi<Args, ClientElement, ServerElement>(
        _ method: RPCBidiStreamMethod<Args, ClientElement, ServerElement>,
        _ handler: @escaping @Sendable (Args, RPCStreamInbound<ClientElement>, RPCStreamWriter<ServerElement>,
                                        RPCContext) async throws -> Void
    ) -> StreamHandler {
        StreamHandler(name: method.name, kind: 3) { params in
            let args = try StreamCoding.arguments(Args.self, params: params)
            return { stream in
                try await handler(args, stream.inbound(), stream.writer(), stream.context)
                return nil
            }
        }
    }
}

