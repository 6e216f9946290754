internal import CRPCCore
internal import Glibc
import Synchronization

// One running stream on the server (ServerStream) and how the core's stream events reach it
// (ServerCore.handleStream); StreamHandler (Server/StreamHandlers.swift) is what runs in it.

/// One stream the server runs: retained by the core (its `crpc_stream_set_user`) until the
/// core frees the stream, so every event finds it; its handler's task ends it.
///
/// `@unchecked Sendable`: `channel` is thread-safe, `task` is behind its lock, the rest is
/// immutable or atomic.
final class ServerStream: @unchecked Sendable {
    let channel: StreamChannel
    let kind: UInt8
    let context: RPCContext
    private let accepted = Atomic<Bool>(false)
    private let task = Locked<Task<Void, Never>?>(nil)

    /// Server streams alive in this process (tests check that every one is freed).
    static let alive = Atomic<Int>(0)

    deinit { Self.alive.subtract(1, ordering: .relaxed) }

    /// The stream whose task this is (set for its handler's job).
    @TaskLocal static var current: ServerStream?

    /// The running stream, for a handler's job.
    static func running() throws(RPCError) -> ServerStream {
        guard let current else { throw RPCError(.internal, "a stream handler ran outside its stream") }
        return current
    }

    init(handle: OpaquePointer, kind: UInt8, context: RPCContext, window: RPCStreamWindow) {
        Self.alive.add(1, ordering: .relaxed)
        channel = StreamChannel(window: window)
        channel.attach(handle)
        self.kind = kind
        self.context = context
    }

    func writer<Element>() -> RPCStreamWriter<Element> {
        RPCStreamWriter(channel: channel, beforeWrite: { [self] in accept() })
    }

    func inbound<Element>() -> RPCStreamInbound<Element> {
        RPCStreamInbound(channel: channel, beforeRead: { [self] in accept() }, undecodable: .invalidArgument)
    }

    /// Accepts the stream (once), lazily: at the handler's first write or read. The
    /// response metadata set until then travels as leading metadata; what is set after, at
    /// the end, as trailing metadata.
    func accept() {
        guard !accepted.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let leading = context.responseMetadata.metadata
        context.responseMetadata.reset()
        let grants = kind != 1
        _ = channel.withHandle { handle in
            ExtEntries.with(leading) { ext, count in
                crpc_stream_accept(handle, grants ? UInt32(clamping: channel.window.messages) : 0,
                                   grants ? UInt32(clamping: channel.window.bytes) : 0, ext, count)
            }
        }
    }

    /// The job a stream handler's params made: runs with the stream's context.
    typealias Job = @Sendable (RPCContext) async throws -> [UInt8]

    /// Runs `job` in the stream's task (on `executor`, when given: the connection's loop),
    /// bounded by `timeout`; the outcome ends the stream.
    func start(_ job: @escaping Job, timeout: Duration?, executor: ServerLoopExecutor?, core: ServerCore) {
        task.withLock { task in
            task = Task(executorPreference: executor) {
                let outcome = await Self.$current.withValue(self) { await Self.run(job, self, timeout: timeout) }
                withExtendedLifetime(core) { self.end(outcome) } // the C server outlives the end
            }
        }
    }

    private static func run(_ job: @escaping Job, _ stream: ServerStream,
                            timeout: Duration?) async -> Result<[UInt8]?, RPCError> {
        let outcome: Result<[UInt8]?, RPCError>?? = await withTaskGroup(of: Result<[UInt8]?, RPCError>?.self) { group in
            group.addTask {
                do { return .success(try await job(stream.context)) } catch {
                    return .failure(Task.isCancelled && !(error is RPCError)
                        ? RPCError(.cancelled, "the stream was cancelled") : RPCError(handlerError: error))
                }
            }
            if let timeout {
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return Task.isCancelled ? nil : .failure(RPCError(.deadlineExceeded, "deadline exceeded"))
                }
            }
            while let next = await group.next() {
                if let next {
                    group.cancelAll()
                    return next
                }
            }
            return nil
        }
        return (outcome ?? nil) ?? .failure(RPCError(.cancelled, "the stream was cancelled"))
    }

    /// Ends the stream with the handler's outcome (the core drops it when the stream is over
    /// already) and gives the handle back.
    private func end(_ outcome: Result<[UInt8]?, RPCError>) {
        channel.endWriting(RPCError(.failedPrecondition, "the stream's handler has returned"))
        let trailing = context.responseMetadata.metadata
        _ = channel.withHandle { handle in
            switch outcome {
            case .success(let bytes):
                let rc = Self.end(handle, result: bytes, error: nil, trailing)
                if rc == -EMSGSIZE {
                    _ = Self.end(handle, result: nil, error: RPCError(.resourceExhausted, "reply larger than the maximum frame size"), trailing)
                }
            case .failure(let error):
                _ = Self.end(handle, result: nil, error: error, trailing)
            }
        }
        channel.releaseHandle()
    }

    private static func end(_ handle: OpaquePointer, result: [UInt8]?, error: RPCError?, _ trailing: RPCMetadata) -> Int32 {
        var reply = crpc_reply()
        return ExtEntries.with(trailing) { ext, count in
            reply.ext = ext
            reply.ext_count = count
            if let error { return ReplySink.withError(error, in: &reply) { crpc_stream_end(handle, &$0) } }
            guard let result else { return crpc_stream_end(handle, &reply) }
            return result.withUnsafeBytes { bytes in
                reply.result = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
                reply.result_len = UInt32(bytes.count)
                return crpc_stream_end(handle, &reply)
            }
        }
    }

    /// The client cancelled, broke the credit rules, or its connection went: the handler is
    /// cancelled, its reads and writes fail with `error`.
    func over(_ error: RPCError) {
        channel.finishInbound(error)
        channel.endWriting(error)
        task.withLock { $0 }?.cancel()
    }
}

extension ServerCore {
    /// A stream's frame off the wire (loop thread): an open finds its handler and starts it;
    /// the rest go to the running stream.
    func handleStream(_ request: UnsafePointer<crpc_request>, _ handle: OpaquePointer) {
        let msg = request.pointee.msg
        if msg.type == UInt8(CRPC_MSG_REQUEST.rawValue) {
            open(request, handle)
            return
        }
        guard let user = crpc_stream_user(handle) else { return }
        let stream = Unmanaged<ServerStream>.fromOpaque(user).takeUnretainedValue()
        switch msg.type {
        case UInt8(CRPC_MSG_ELEMENT.rawValue):
            stream.channel.received(UnsafeRawBufferPointer(start: msg.body, count: Int(msg.body_len)),
                                    metadata: ExtEntries.metadata(msg.ext, Int(msg.ext_count)),
                                    frameBytes: Int(msg.frame_len))
        case UInt8(CRPC_MSG_HALF_CLOSE.rawValue):
            stream.channel.finishInbound(nil)
        case UInt8(CRPC_MSG_CREDIT.rawValue):
            stream.channel.wakeWriter()
        default: // CRPC_MSG_CANCEL: the stream is over
            let error = switch msg.error_code {
            case Int32(CRPC_STATUS_RESOURCE_EXHAUSTED.rawValue):
                RPCError(.resourceExhausted, "the client sent beyond its stream credit")
            case Int32(CRPC_STATUS_INVALID_ARGUMENT.rawValue):
                RPCError(.invalidArgument, "the client sent a stream frame that does not decode")
            case Int32(CRPC_STATUS_UNAVAILABLE.rawValue):
                RPCError(.unavailable, "the client's connection is gone")
            default:
                RPCError(.cancelled, "the client cancelled the stream")
            }
            stream.over(error)
        }
    }

    private func open(_ request: UnsafePointer<crpc_request>, _ handle: OpaquePointer) {
        let msg = request.pointee.msg
        let name = String(decoding: UnsafeRawBufferPointer(start: msg.method, count: Int(msg.method_len)), as: UTF8.self)
        guard let handler = router.streamHandler(named: name), handler.kind == msg.stream_kind else {
            Self.refuse(handle, RPCError(.unimplemented, "rpc: can't find stream method \(Router.shown(name))"))
            return
        }
        let message = (UnsafeRawPointer(request) + MemoryLayout<crpc_request>.offset(of: \.msg)!)
            .assumingMemoryBound(to: crpc_message.self)
        let params = RequestParams(bytes: UnsafeRawBufferPointer(start: msg.body, count: Int(msg.body_len)),
                                   tree: crpc_message_value(message).map { MessagePackTree(unsafeRoot: UnsafeRawPointer($0)) })
        guard case .async(let prepare) = handler.handler.body else { preconditionFailure("stream jobs run as tasks") }
        let job: ServerStream.Job
        do { job = try prepare(params) } catch {
            Self.refuse(handle, RPCError(handlerError: error))
            return
        }
        let timeout: Duration? = msg.timeout_us == 0 ? nil : .microseconds(Int64(clamping: msg.timeout_us))
        let context = RPCContext(method: handler.name, metadata: ExtEntries.metadata(msg.ext, Int(msg.ext_count)),
                                 timeout: timeout, responseMetadata: RPCResponseMetadata(),
                                 connection: RPCConnectionID(rawValue: request.pointee.conn), peer: RPCPeer.of(request))
        let stream = ServerStream(handle: handle, kind: handler.kind, context: context, window: streamWindow)
        crpc_stream_set_user(handle, Unmanaged.passRetained(stream).toOpaque()) // released by the core's free
        var executor: ServerLoopExecutor?
        if handler.onLoop {
            executor = loopExecutors[Int(request.pointee.conn >> 56) % loopExecutors.count]
            executor!.bind(request.pointee.server)
        }
        stream.start(job, timeout: timeout, executor: executor, core: self)
    }

    /// Ends a stream at its open, with `error`, and gives its handle back.
    private static func refuse(_ handle: OpaquePointer, _ error: RPCError) {
        var reply = crpc_reply()
        _ = ReplySink.withError(error, in: &reply) { crpc_stream_end(handle, &$0) }
        crpc_stream_release(handle)
    }
}

/// The core freed a stream: the reference its user slot held goes.
let streamReleaseTrampoline: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, user in
    guard let user else { return }
    Unmanaged<ServerStream>.fromOpaque(user).release()
}
