import SwiftRPC

/// What one attempt does on the connection it is given: the call, with whatever it returns.
typealias ClusterOperation<Value: Sendable> = @Sendable (RPCClient, RPCCallOptions) async throws(RPCError) -> Value

extension RPCClusterClient {
    /// Calls `method` on one server of the service, picked by the configured selection,
    /// retrying as the fail mode allows.
    ///
    /// - Throws: `RPCError`: the last attempt's error; `.unavailable` with
    ///   ``SwiftRPC/RPCError/requestNeverSent`` when no server is available.
    public func call<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions()
    ) async throws(RPCError) -> Reply {
        try await run(method.name, options) { client, options throws(RPCError) in
            try await client.call(method, args, metadata: options.metadata, timeout: options.timeout)
        }
    }

    /// ``call(_:_:options:)``, returning the reply with the metadata its server sent back
    /// (that of the attempt that succeeded).
    public func callWithMetadata<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions()
    ) async throws(RPCError) -> RPCResponse<Reply> {
        try await run(method.name, options) { client, options throws(RPCError) in
            try await client.callWithMetadata(method, args, metadata: options.metadata, timeout: options.timeout)
        }
    }

    /// Starts ``call(_:_:options:)`` and returns at once (rpcx's `XClient.Go`): `completion`
    /// runs exactly once with the reply or the failure, on the thread of the task that ran
    /// the call (a global-executor thread), so it must not block. Cancelling the returned
    /// task cancels the call, which then ends with `.cancelled`.
    @discardableResult
    public func go<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions(),
        completion: @escaping @Sendable (Result<Reply, RPCError>) -> Void
    ) -> Task<Void, Never> {
        Task {
            do throws(RPCError) {
                completion(.success(try await call(method, args, options: options)))
            } catch {
                completion(.failure(error))
            }
        }
    }

    /// Runs `operation` on the servers the selection and the fail mode choose.
    func run<Value: Sendable>(
        _ methodName: String, _ options: RPCCallOptions, hedged: Bool = true,
        _ operation: @escaping ClusterOperation<Value>
    ) async throws(RPCError) -> Value {
        configuration.retryBudget.recordCall()
        let idempotent = options.idempotent ?? configuration.idempotentMethods.contains(methodName)
        switch configuration.failMode {
        case .failFast:
            let view = snapshot.load()
            guard let server = pickServer(view, options, excluding: []) else { throw noServer() }
            return try await attempt(server, options, operation).get()
        case .failover(let maxAttempts):
            return try await failover(options, operation, idempotent: idempotent, maxAttempts: maxAttempts)
        case .failTry(let maxAttempts):
            return try await failTry(options, operation, idempotent: idempotent, maxAttempts: maxAttempts)
        case .backup(let delay):
            // Not idempotent, or a stream (its elements cannot go twice): no hedging.
            guard idempotent, hedged else {
                return try await failover(options, operation, idempotent: false, maxAttempts: 2)
            }
            return try await backup(options, operation, delay: delay)
        }
    }

    // MARK: Fail modes

    private func failover<Value: Sendable>(
        _ options: RPCCallOptions, _ operation: ClusterOperation<Value>,
        idempotent: Bool, maxAttempts: Int
    ) async throws(RPCError) -> Value {
        var tried: [ServerEndpoint] = []
        var lastError: RPCError?
        for attemptNumber in 0..<max(maxAttempts, 1) {
            // A fresh snapshot each attempt: a server that just joined can take the retry.
            let view = snapshot.load()
            guard let server = pickServer(view, options, excluding: tried)
                    ?? (attemptNumber > 0 ? pickServer(view, options, excluding: []) : nil) else {
                throw lastError ?? noServer()
            }
            switch await attempt(server, options, operation) {
            case .success(let value): return value
            case .failure(let error):
                lastError = error
                tried.append(server)
                guard mayRetry(error, idempotent: idempotent), attemptNumber + 1 < maxAttempts,
                      configuration.retryBudget.tryWithdraw() else { throw error }
            }
        }
        throw lastError ?? noServer()
    }

    private func failTry<Value: Sendable>(
        _ options: RPCCallOptions, _ operation: ClusterOperation<Value>,
        idempotent: Bool, maxAttempts: Int
    ) async throws(RPCError) -> Value {
        guard let server = pickServer(snapshot.load(), options, excluding: []) else { throw noServer() }
        var attemptNumber = 0
        while true {
            switch await attempt(server, options, operation) {
            case .success(let value): return value
            case .failure(let error):
                attemptNumber += 1
                guard mayRetry(error, idempotent: idempotent), attemptNumber < maxAttempts,
                      configuration.retryBudget.tryWithdraw() else { throw error }
            }
        }
    }

    private func backup<Value: Sendable>(
        _ options: RPCCallOptions, _ operation: @escaping ClusterOperation<Value>, delay: Duration
    ) async throws(RPCError) -> Value {
        guard let first = pickServer(snapshot.load(), options, excluding: []) else { throw noServer() }
        let budget = configuration.retryBudget
        let primaryFailed = AsyncStream.makeStream(of: Void.self)
        let outcome: Result<Value, RPCError> = await withTaskGroup(of: Result<Value, RPCError>?.self) { group in
            group.addTask {
                let result = await self.attempt(first, options, operation)
                if case .failure(let error) = result, self.mayRetry(error, idempotent: true) {
                    primaryFailed.continuation.yield() // send the backup now
                }
                primaryFailed.continuation.finish()
                return result
            }
            group.addTask {
                // The backup goes after `delay`, or at once when the primary failed
                // retryably; not at all when the primary succeeded (the task is
                // cancelled) or failed for good.
                let early = await withTaskGroup(of: Bool?.self) { timer in
                    timer.addTask { try? await Task.sleep(for: delay); return Task.isCancelled ? nil : false }
                    timer.addTask {
                        var it = primaryFailed.stream.makeAsyncIterator()
                        return await it.next() != nil ? true : nil
                    }
                    let first = await timer.next() ?? nil
                    timer.cancelAll()
                    return first
                }
                guard early != nil, !Task.isCancelled else { return nil }
                // The budget first, then the pick: a backup the budget refuses must not take
                // a selector turn (with round-robin, it would steer every first request to
                // the same servers). Picked now, from the current servers; a token taken
                // when no second server is available goes back.
                guard budget.tryWithdraw() else { return nil }
                guard let second = self.pickServer(self.snapshot.load(), options, excluding: [first]) else {
                    budget.refund()
                    return nil
                }
                return await self.attempt(second, options, operation)
            }
            var lastFailure: RPCError?
            while let next = await group.next() {
                guard let result = next else { continue }
                switch result {
                case .success:
                    group.cancelAll() // the loser's call is cancelled, and its server told
                    return result
                case .failure(let error):
                    lastFailure = error
                }
            }
            return .failure(lastFailure ?? noServer())
        }
        return try outcome.get()
    }

    // MARK: One attempt

    /// Whether a failed attempt may be repeated: a retryable code, and either the request
    /// never left this process or the call is idempotent.
    func mayRetry(_ error: RPCError, idempotent: Bool) -> Bool {
        // A stream that has moved an element is never retried (ClusterStreams.swift).
        configuration.retryableCodes.contains(error.code) && (error.requestNeverSent || idempotent)
            && !(StreamAttempt.current?.flowed ?? false)
    }

    func pickServer(_ view: ServerSnapshot, _ options: RPCCallOptions, excluding: [ServerEndpoint]) -> ServerEndpoint? {
        let endpoints = view.endpoints
        let index = selector.pick(view, key: options.hashKey) { i in
            let e = endpoints[i]
            return e.isAvailable && !excluding.contains { $0 === e }
        }
        return index.map { endpoints[$0] }
    }

    func noServer() -> RPCError {
        var error = RPCError(.unavailable, "no server of \(service) is available")
        error.requestNeverSent = true
        return error
    }

    /// One call on one server, counted in its statistics.
    func attempt<Args, Reply>(
        _ server: ServerEndpoint, _ method: RPCMethod<Args, Reply>, _ args: Args, _ options: RPCCallOptions
    ) async -> Result<Reply, RPCError> {
        await attempt(server, options) { client, options throws(RPCError) in
            try await client.call(method, args, metadata: options.metadata, timeout: options.timeout)
        }
    }

    /// One operation on one server, counted in its statistics.
    func attempt<Value: Sendable>(
        _ server: ServerEndpoint, _ options: RPCCallOptions, _ operation: ClusterOperation<Value>
    ) async -> Result<Value, RPCError> {
        guard let (client, index) = server.connection() else {
            var error = RPCError(.unavailable, "every connection to \(server.instance.address) is down")
            error.requestNeverSent = true
            return .failure(error)
        }
        server.began(connection: index)
        // Latency is only read by the least-loaded selection: no clock reads otherwise.
        let start = timesAttempts ? ContinuousClock.now : nil
        do throws(RPCError) {
            let result = try await operation(client, options)
            server.ended(success: true, nanos: start.map { Self.nanoseconds(ContinuousClock.now - $0) } ?? 0)
            return .success(result)
        } catch {
            server.ended(success: false, nanos: 0)
            return .failure(error)
        }
    }

    private static func nanoseconds(_ d: Duration) -> Int {
        Int(d.components.seconds) * 1_000_000_000 + Int(d.components.attoseconds / 1_000_000_000)
    }
}
