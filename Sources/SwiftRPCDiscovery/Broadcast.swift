import SwiftRPC

extension RPCClusterClient {
    /// Calls `method` on every server listed now, in parallel (one attempt each), and
    /// returns each server's result (rpcx's Broadcast, collecting).
    public func broadcast<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions()
    ) async -> [(server: RPCServiceInstance, result: Result<Reply, RPCError>)] {
        let endpoints = snapshot.load().endpoints
        return await withTaskGroup(of: (Int, Result<Reply, RPCError>).self) { group in
            for (i, endpoint) in endpoints.enumerated() {
                group.addTask { (i, await self.attempt(endpoint, method, args, options)) }
            }
            var results = [Result<Reply, RPCError>?](repeating: nil, count: endpoints.count)
            for await (i, result) in group { results[i] = result }
            return endpoints.indices.map { (endpoints[$0].instance, results[$0]!) }
        }
    }

    /// Calls `method` on every server and succeeds only if all do: returns their replies
    /// (in server order), or throws the first failure (by server order), naming the
    /// server. With no server listed it throws `.unavailable`.
    public func broadcastAll<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, options: RPCCallOptions = RPCCallOptions()
    ) async throws(RPCError) -> [Reply] {
        let results = await broadcast(method, args, options: options)
        if results.isEmpty { throw noServer() }
        var replies: [Reply] = []
        for (server, result) in results {
            switch result {
            case .success(let reply): replies.append(reply)
            case .failure(let error):
                var named = error
                named.message = "\(server.address): \(error.message)"
                throw named
            }
        }
        return replies
    }

    /// Calls `method` on `fanout` different servers at once (picked by the selection) and
    /// returns the first success, cancelling the others (rpcx's Fork). Throws the last
    /// failure when all fail. Runs the method up to `fanout` times: for idempotent calls.
    public func fork<Args, Reply>(
        _ method: RPCMethod<Args, Reply>, _ args: Args, fanout: Int = 2,
        options: RPCCallOptions = RPCCallOptions()
    ) async throws(RPCError) -> Reply {
        let view = snapshot.load()
        var chosen: [ServerEndpoint] = []
        while chosen.count < max(fanout, 1), let next = pickServer(view, options, excluding: chosen) {
            chosen.append(next)
        }
        guard !chosen.isEmpty else { throw noServer() }
        let targets = chosen
        let outcome: Result<Reply, RPCError> = await withTaskGroup(of: Result<Reply, RPCError>.self) { group in
            for server in targets {
                group.addTask { await self.attempt(server, method, args, options) }
            }
            var lastFailure: RPCError?
            while let result = await group.next() {
                if case .failure(let error) = result { lastFailure = error; continue }
                group.cancelAll()
                return result
            }
            return .failure(lastFailure!)
        }
        return try outcome.get()
    }
}

extension RPCClusterClient {
    /// Sends a notification (oneway, never answered) to one server picked by the
    /// selection. A notification that could not be sent (its connection just went down)
    /// goes to another server; once sent, it is never repeated.
    ///
    /// - Throws: `RPCError` when no server could take it.
    public func notify<Args: Encodable>(_ name: String, _ args: Args,
                                        options: RPCCallOptions = RPCCallOptions()) throws(RPCError) {
        var tried: [ServerEndpoint] = []
        let view = snapshot.load()
        while let server = pickServer(view, options, excluding: tried) {
            tried.append(server)
            guard let (client, index) = server.connection() else { continue }
            do {
                try client.notify(name, args, metadata: options.metadata)
                server.began(connection: index)
                server.ended(success: true, nanos: 0)
                return
            } catch {
                // notify throws only before sending: always safe to try elsewhere, but an
                // encoding failure would fail everywhere.
                if error.code == .invalidArgument { throw error }
            }
        }
        throw noServer()
    }
}
