/// The intercepted path of calls: taken only when a client has interceptors or a tracer.
extension RPCClient {
    /// `call` through the interceptors; the last step makes the call on the wire.
    @usableFromInline
    func intercepted<Args, Reply>(
        _ pipeline: ClientPipeline, _ method: RPCMethod<Args, Reply>, _ args: Args,
        metadata: RPCMetadata, timeout: Duration?
    ) async throws(RPCError) -> RPCResponse<Reply> {
        let reply = try await pipeline.run(RPCClientCall(method: method.name, metadata: metadata, timeout: timeout)) { call in
            let pending = AsyncPendingCall<Reply>.make(handle: self.handle)
            pending.wantsMetadata = true
            let value = try await self.call(method, args, metadata: call.metadata, timeout: call.timeout, pending: pending)
            return RPCClientReply(value: value, metadata: pending.responseMetadata)
        }
        guard let value = reply.value as? Reply else {
            throw RPCError(.internal, "an interceptor answered \(method.name) with \(type(of: reply.value)), not \(Reply.self)")
        }
        return RPCResponse(value: value, metadata: reply.metadata)
    }

    /// `go` through the interceptors: the call runs as a task (interceptors are async), and
    /// the returned `RPCCall` cancels that task.
    @usableFromInline
    func goIntercepted<Args, Reply>(
        _ pipeline: ClientPipeline, _ method: RPCMethod<Args, Reply>, _ args: Args,
        metadata: RPCMetadata, timeout: Duration?,
        completion: @escaping @Sendable (Result<Reply, RPCError>) -> Void
    ) -> RPCCall {
        let calls = handle.interceptedCalls
        let id = calls.start { id in
            Task {
                let result: Result<Reply, RPCError>
                do throws(RPCError) {
                    result = .success(try await self.intercepted(pipeline, method, args, metadata: metadata, timeout: timeout).value)
                } catch {
                    result = .failure(error)
                }
                calls.finished(id)
                completion(result)
            }
        }
        return RPCCall(handle: handle, id: id)
    }
}

/// The tasks of intercepted `go` calls by id. Their ids start at 2^63, far above any id
/// the core hands out, so `RPCCall.cancel` can tell the two apart.
final class InterceptedCalls: Sendable {
    static let firstID: UInt64 = 1 << 63
    private let state = Locked<(next: UInt64, tasks: [UInt64: Task<Void, Never>])>((firstID, [:]))

    /// Records the task `make` starts under a new id. The lock is held while it is made,
    /// so the task's own `finished` cannot run before it is recorded.
    func start(_ make: (UInt64) -> Task<Void, Never>) -> UInt64 {
        state.withLock { state in
            let id = state.next
            state.next &+= 1
            state.tasks[id] = make(id)
            return id
        }
    }

    func finished(_ id: UInt64) { _ = state.withLock { $0.tasks.removeValue(forKey: id) } }

    func cancel(_ id: UInt64) { state.withLock { $0.tasks[id] }?.cancel() }
}
