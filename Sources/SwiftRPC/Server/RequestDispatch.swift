// A request on the loop thread that read it, after ServerCore.handle found its handler:
// the context, then the handler (RegisteredHandler.run: decode, run, encode) inline or as a
// task, then the reply (ReplySink). Nothing here goes back to the core but the reply.

/// A request as the Swift server dispatches it, made by `ServerCore.handle` from what the
/// core read. Its bytes are the core's: valid only until `dispatch` returns. It holds no
/// references (its metadata travels beside it, owned), so passing it costs no reference
/// counting.
struct ServerRequest {
    let conn: UInt64
    let msgid: UInt32
    /// A call (true) or a notification, which nobody waits for.
    let wantsReply: Bool
    /// The method's name as it came off the wire.
    let wireName: UnsafeRawBufferPointer
    let params: RequestParams
    let timeout: Duration?
    let replies: ReplySink
    /// The connection's peer (made once per connection, Core/TLSContext.swift).
    let peer: RPCPeer
}

extension ServerCore {
    /// Runs `request` with `handler` (nil: a built-in, or no such method). `handler` is
    /// unretained: the router, which this core holds, keeps it alive. `metadata` is the
    /// request's, handed over to its context.
    func dispatch(_ request: ServerRequest, metadata: consuming RPCMetadata, handler: Unmanaged<RegisteredHandler>?,
                  scratch: LoopScratch) {
        // A registered method's name is already a String; only the others need one made.
        // Read from the context from here on: the context takes this copy over, so a name
        // too long to be stored inline is retained once per request, not twice.
        let name = handler?._withUnsafeGuaranteedRef { $0.name } ?? String(decoding: request.wireName, as: UTF8.self)
        // Inline handlers share their loop's metadata box (they finish before the next
        // request); an async handler gets its own below.
        let responseMetadata = scratch.responseMetadata
        responseMetadata.reset()
        let inlineContext = RPCContext(
            method: name, metadata: metadata, timeout: request.timeout,
            responseMetadata: responseMetadata, connection: RPCConnectionID(rawValue: request.conn),
            peer: request.peer)
        let writer = scratch.writer
        writer.reset()

        let params = request.params  // captured alone, not the whole request
        let outcome = handler.map { handler in
            handler._withUnsafeGuaranteedRef { $0.run(params, context: inlineContext, writer: writer) }
        } ?? router.answerBuiltin(inlineContext.method, writer: writer)
        let (conn, msgid, replies) = (request.conn, request.msgid, request.replies)
        switch outcome {
        case .written:
            if request.wantsReply {
                writer.withUnsafeBytes { replies.send(conn, msgid, .result($0), metadata: responseMetadata.metadata) }
            }
        case .echo(let range):
            if request.wantsReply {
                replies.send(conn, msgid, .result(UnsafeRawBufferPointer(rebasing: params.bytes[range])),
                             metadata: responseMetadata.metadata)
            }
        case .failed(let error):
            if request.wantsReply { replies.send(conn, msgid, .error(error), metadata: responseMetadata.metadata) }
        case .later(let job):
            let context = RPCContext(method: inlineContext.method, metadata: inlineContext.metadata,
                                     timeout: inlineContext.timeout, responseMetadata: RPCResponseMetadata(),
                                     connection: inlineContext.connection, peer: inlineContext.peer)
            if request.wantsReply {
                startCall(job, context, conn: conn, msgid: msgid, replies: replies)
            } else {
                startNotification(job, context, conn: conn)
            }
        }
    }

    /// Runs a call's job in a task. The deadline, if any, is watched by `running`: it
    /// answers 4 and cancels the task when it passes, and is gone the moment the handler
    /// answers first. The task holds this core, so the C server outlives its reply.
    private func startCall(_ job: @escaping @Sendable (RPCContext) async throws -> [UInt8], _ context: RPCContext,
                           conn: UInt64, msgid: UInt32, replies: ReplySink) {
        running.startCall(.init(conn: conn, msgid: msgid), timeout: context.timeout, replies: replies) { ticket in
            Task {
                let outcome: Result<[UInt8], RPCError>
                do { outcome = .success(try await job(context)) } catch {
                    outcome = .failure(Task.isCancelled && !(error is RPCError)
                        ? RPCError(.cancelled, "the call was cancelled") : RPCError(handlerError: error))
                }
                if self.running.finish(ticket) {
                    replies.send(conn, msgid, outcome, metadata: context.responseMetadata.metadata)
                }
            }
        }
    }

    /// Runs a notification's job in a task. Past the connection's or the server's limit the
    /// notification is dropped: it is oneway, nobody waits.
    private func startNotification(_ job: @escaping @Sendable (RPCContext) async throws -> [UInt8], _ context: RPCContext,
                                   conn: UInt64) {
        _ = running.startNotification(conn: conn) { ticket in
            Task {
                _ = try? await job(context)
                _ = self.running.finish(ticket)
            }
        }
    }
}

extension Router {
    /// The transport seam: runs the loop-thread part of a call to `name` with params made in
    /// memory (tests), as `dispatch` does for a request off the wire.
    func run(_ name: String, params: RequestParams, context: RPCContext, writer: MessagePackWriter) -> HandlerOutcome {
        guard let handler = handler(named: name) else { return answerBuiltin(name, writer: writer) }
        return handler.run(params, context: context, writer: writer)
    }
}
